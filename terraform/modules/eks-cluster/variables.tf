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
  description = "This party's own IAM principals, the only ones given cluster-admin (EKS access entries)."
  type        = list(string)

  validation {
    condition     = length(var.admin_principal_arns) >= 1 && alltrue([for a in var.admin_principal_arns : can(regex("^arn:[a-z-]+:iam::[0-9]{12}:(role|user)/", a))])
    error_message = "admin_principal_arns: at least one IAM role or user ARN (arn:<partition>:iam::<account>:role/...)."
  }
}

variable "namespace" {
  description = "Kubernetes namespace of the workload ServiceAccount."
  type        = string
}

variable "service_account" {
  description = "Kubernetes ServiceAccount that assumes the SageMaker role (IRSA)."
  type        = string
}

variable "region" {
  description = "AWS region (SageMaker ARNs, VPC endpoint service names)."
  type        = string
}

variable "experiment_prefix" {
  description = "SageMaker Experiments name prefix the workload role may use."
  type        = string
}

variable "tracking_run_name" {
  description = "This party's run name in every experiment: \"aggregator\" or \"client-<hospital>\" (fedheart.tracking.names)."
  type        = string
}

variable "interface_endpoint_services" {
  description = "AWS services reached through VPC interface endpoints (com.amazonaws.<region>.<service>), the only AWS addresses the pods' NetworkPolicies admit."
  type        = list(string)
  default     = ["sagemaker.api", "sagemaker.metrics", "sts"]
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
