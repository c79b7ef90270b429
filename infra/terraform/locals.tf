locals {
  account_id  = data.aws_caller_identity.current.account_id
  partition   = data.aws_partition.current.partition
  bucket_name = var.bucket_name != "" ? var.bucket_name : "${var.name}-documents-${local.account_id}"
  irsa        = var.eks_oidc_provider_arn != ""
  oidc_issuer = local.irsa ? element(split(":oidc-provider/", var.eks_oidc_provider_arn), 1) : ""
}
