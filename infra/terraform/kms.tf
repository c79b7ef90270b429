# One customer-managed key for the documents at rest: the bucket's objects (SSE-KMS with a
# bucket key, so a download costs no KMS call per object).
resource "aws_kms_key" "documents" {
  description             = "${var.name}: documents in s3://${local.bucket_name}"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.kms.json
}

resource "aws_kms_alias" "documents" {
  name          = "alias/${var.name}-documents"
  target_key_id = aws_kms_key.documents.key_id
}

data "aws_iam_policy_document" "kms" {
  #checkov:skip=CKV_AWS_111:A key policy's "*" resource is the key itself; this is AWS's default key policy (the account's IAM decides).
  #checkov:skip=CKV_AWS_356:A key policy's "*" resource is the key itself, not every resource.
  #checkov:skip=CKV_AWS_109:Key administration stays with the account root, as in AWS's default key policy; IAM scopes who may use it.
  # The account administers the key through IAM (the AWS default key policy); the workers'
  # kms:Decrypt is granted in their IAM policy, scoped to this key.
  statement {
    sid       = "AccountAdministersTheKeyThroughIAM"
    actions   = ["kms:*"]
    resources = ["*"] # in a key policy, "*" is this key
    principals {
      type        = "AWS"
      identifiers = ["arn:${local.partition}:iam::${local.account_id}:root"]
    }
  }
}
