output "bucket" {
  description = "The documents bucket: upload here."
  value       = aws_s3_bucket.documents.id
}

output "queue_url" {
  description = "The bucket-events queue (PAGEMILL_SQS_QUEUE_URL)."
  value       = aws_sqs_queue.events.id
}

output "dead_letter_queue_url" {
  description = "Events delivered max_receive_count times without success."
  value       = aws_sqs_queue.events_dlq.id
}

output "kms_key_arn" {
  description = "The documents key (uploaders need kms:GenerateDataKey on it)."
  value       = aws_kms_key.documents.arn
}

output "policy_arns" {
  description = "IAM policies to attach: intake, workers (and beat), keda."
  value = {
    intake  = aws_iam_policy.intake.arn
    workers = aws_iam_policy.workers.arn
    keda    = aws_iam_policy.keda.arn
  }
}

output "irsa_role_arns" {
  description = "IRSA roles for infra/k8s's service accounts (eks.amazonaws.com/role-arn); empty without var.eks_oidc_provider_arn."
  value       = { for key, role in aws_iam_role.irsa : key => role.arn }
}

output "pagemill_env" {
  description = "Settings for every pagemill process (the rest: database, broker, provider)."
  value = {
    PAGEMILL_S3_REGION         = var.region
    PAGEMILL_SQS_QUEUE_URL     = aws_sqs_queue.events.id
    PAGEMILL_RECONCILE_BUCKETS = jsonencode([aws_s3_bucket.documents.id])
  }
}

output "env_file" {
  description = "pagemill_env as lines of an env file: terraform output -raw env_file >> .env"
  value = join("\n", [
    "PAGEMILL_S3_REGION=${var.region}",
    "PAGEMILL_SQS_QUEUE_URL=${aws_sqs_queue.events.id}",
    "PAGEMILL_RECONCILE_BUCKETS=${jsonencode([aws_s3_bucket.documents.id])}",
    "",
  ])
}
