# Least privilege, one policy per role of the pipeline:
#   intake  (`pagemill ingest`): take events off the queue; HEAD objects for their metadata.
#   workers (`pagemill worker`, `pagemill beat`): read documents (any version), list the bucket
#           for reconciliation, decrypt with the documents key.
#   keda    (KEDA operator): read the queue depth to scale the intake.
# Attach them to whatever runs pagemill (instance profile, ECS task role); with
# var.eks_oidc_provider_arn set, IRSA roles for infra/k8s's service accounts are created too.

data "aws_iam_policy_document" "intake" {
  statement {
    sid = "ConsumeBucketEvents"
    actions = [
      "sqs:ReceiveMessage",
      "sqs:DeleteMessage",
      "sqs:ChangeMessageVisibility",
      "sqs:GetQueueAttributes",
      "sqs:GetQueueUrl",
    ]
    resources = [aws_sqs_queue.events.arn]
  }

  statement {
    sid       = "ReadObjectMetadata" # HeadObject needs s3:GetObject; it returns no content
    actions   = ["s3:GetObject", "s3:GetObjectVersion"]
    resources = ["${aws_s3_bucket.documents.arn}/*"]
  }
}

data "aws_iam_policy_document" "workers" {
  statement {
    sid       = "ReadDocuments"
    actions   = ["s3:GetObject", "s3:GetObjectVersion"]
    resources = ["${aws_s3_bucket.documents.arn}/*"]
  }

  statement {
    sid       = "ListForReconciliation"
    actions   = ["s3:ListBucket", "s3:ListBucketVersions"]
    resources = [aws_s3_bucket.documents.arn]
  }

  statement {
    sid       = "DecryptDocuments"
    actions   = ["kms:Decrypt"]
    resources = [aws_kms_key.documents.arn]
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["s3.${var.region}.amazonaws.com"]
    }
  }
}

data "aws_iam_policy_document" "keda" {
  statement {
    sid       = "ReadQueueDepth"
    actions   = ["sqs:GetQueueAttributes"]
    resources = [aws_sqs_queue.events.arn]
  }
}

resource "aws_iam_policy" "intake" {
  name        = "${var.name}-intake"
  description = "pagemill ingest: consume the bucket events of ${local.bucket_name}"
  policy      = data.aws_iam_policy_document.intake.json
}

resource "aws_iam_policy" "workers" {
  name        = "${var.name}-workers"
  description = "pagemill workers: read and list ${local.bucket_name}"
  policy      = data.aws_iam_policy_document.workers.json
}

resource "aws_iam_policy" "keda" {
  name        = "${var.name}-keda"
  description = "KEDA: read the depth of the pagemill events queue"
  policy      = data.aws_iam_policy_document.keda.json
}

# --- IRSA roles for infra/k8s (only with var.eks_oidc_provider_arn) ----------------------------

locals {
  service_accounts = {
    intake  = { subject = "system:serviceaccount:${var.k8s_namespace}:pagemill-intake", policy = aws_iam_policy.intake.arn }
    workers = { subject = "system:serviceaccount:${var.k8s_namespace}:pagemill-worker", policy = aws_iam_policy.workers.arn }
    keda    = { subject = "system:serviceaccount:${var.keda_service_account}", policy = aws_iam_policy.keda.arn }
  }
}

data "aws_iam_policy_document" "irsa_trust" {
  for_each = local.irsa ? local.service_accounts : {}

  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]
    principals {
      type        = "Federated"
      identifiers = [var.eks_oidc_provider_arn]
    }
    condition {
      test     = "StringEquals"
      variable = "${local.oidc_issuer}:sub"
      values   = [each.value.subject]
    }
    condition {
      test     = "StringEquals"
      variable = "${local.oidc_issuer}:aud"
      values   = ["sts.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "irsa" {
  for_each = local.irsa ? local.service_accounts : {}

  name               = "${var.name}-${each.key}"
  assume_role_policy = data.aws_iam_policy_document.irsa_trust[each.key].json
}

resource "aws_iam_role_policy_attachment" "irsa" {
  for_each = local.irsa ? local.service_accounts : {}

  role       = aws_iam_role.irsa[each.key].name
  policy_arn = each.value.policy
}
