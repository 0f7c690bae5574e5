variable "name" {
  description = "Cluster name; also the prefix of every resource name in this module."
  type        = string
}

variable "vpc_cidr" {
  description = "IPv4 CIDR of this cluster's own VPC (must not overlap the other clusters')."
  type        = string
}

variable "availability_zones" {
  description = "Availability zones for the subnets (exactly 2)."
  type        = list(string)

  validation {
    condition     = length(var.availability_zones) == 2
    error_message = "Exactly two availability zones are expected."
  }
}

variable "kubernetes_version" {
  description = "EKS Kubernetes version."
  type        = string
}

variable "service_ipv4_cidr" {
  description = "Kubernetes Service CIDR (outside every VPC CIDR)."
  type        = string
}

variable "endpoint_public_access_cidrs" {
  description = "CIDRs allowed to reach the public Kubernetes API endpoint."
  type        = list(string)
}

variable "admin_principal_arns" {
  description = "IAM principals given cluster-admin through EKS access entries."
  type        = list(string)
  default     = []
}

variable "namespace" {
  description = "Kubernetes namespace of the workload ServiceAccount."
  type        = string
}

variable "service_account" {
  description = "Kubernetes ServiceAccount that assumes the SageMaker role (IRSA)."
  type        = string
}

variable "sagemaker_policy_json" {
  description = "IAM policy document (JSON) attached to the workload role."
  type        = string
}

variable "partition" {
  description = "AWS partition (aws, aws-cn, ...)."
  type        = string
}

variable "tags" {
  description = "Tags for every resource."
  type        = map(string)
  default     = {}
}
