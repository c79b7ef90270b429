variable "region" {
  description = "AWS region of the bucket and the queue (PAGEMILL_S3_REGION)."
  type        = string
  default     = "eu-central-1"
}

variable "name" {
  description = "Prefix of every resource name."
  type        = string
  default     = "pagemill"

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9-]{1,30}$", var.name))
    error_message = "name: lower-case letters, digits and dashes, at most 31 characters."
  }
}

variable "bucket_name" {
  description = "Name of the documents bucket; empty: <name>-documents-<account id>."
  type        = string
  default     = ""
}

variable "notification_prefix" {
  description = "Only objects under this prefix are processed (empty: the whole bucket)."
  type        = string
  default     = ""
}

variable "noncurrent_version_days" {
  description = "Days an overwritten or deleted document version is kept."
  type        = number
  default     = 30
}

variable "document_retention_days" {
  description = "Days an uploaded document is kept (0: forever). Results live in Postgres."
  type        = number
  default     = 0
}

variable "queue_retention_seconds" {
  description = "How long an event waits in the queue: long enough for any intake outage."
  type        = number
  default     = 1209600 # 14 days, the maximum
}

variable "queue_visibility_timeout_seconds" {
  description = "Seconds a received event stays hidden before another intake may take it."
  type        = number
  default     = 60
}

variable "max_receive_count" {
  description = "Deliveries of one event before it moves to the dead-letter queue."
  type        = number
  default     = 10
}

variable "access_log_bucket" {
  description = "Existing bucket for S3 server access logs (empty: no access logging)."
  type        = string
  default     = ""
}

variable "eks_oidc_provider_arn" {
  description = "IAM OIDC provider of an EKS cluster: creates IRSA roles for the Kubernetes service accounts (empty: policies only)."
  type        = string
  default     = ""
}

variable "k8s_namespace" {
  description = "Namespace of infra/k8s (service accounts pagemill-intake and pagemill-worker)."
  type        = string
  default     = "pagemill"
}

variable "keda_service_account" {
  description = "namespace:name of the KEDA operator, which reads the queue depth."
  type        = string
  default     = "keda:keda-operator"
}

variable "tags" {
  description = "Tags on every resource."
  type        = map(string)
  default     = {}
}
