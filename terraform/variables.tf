variable "region" {
  description = "AWS region of all clusters, ECR repositories and SageMaker Experiments."
  type        = string
  default     = "eu-central-1"
}

variable "name_prefix" {
  description = "Prefix of cluster and IAM role names: <prefix>-server, <prefix>-<client>."
  type        = string
  default     = "fedheart"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,20}$", var.name_prefix))
    error_message = "name_prefix: 2-21 chars, lowercase letters, digits and '-', starting with a letter."
  }
}

variable "client_clusters" {
  description = <<-EOT
    One EKS cluster (and VPC) per hospital, named <name_prefix>-<client>. The
    reference architecture uses two; use all four hospitals with
    client_clusters = ["cleveland", "hungarian", "switzerland", "va"]. Each name must
    match a k8s/overlays/client-<name> overlay.
  EOT
  type        = list(string)
  default     = ["cleveland", "hungarian"]

  validation {
    condition     = length(var.client_clusters) >= 1 && length(var.client_clusters) == length(distinct(var.client_clusters))
    error_message = "client_clusters must hold at least one name, without duplicates."
  }

  validation {
    condition     = alltrue([for c in var.client_clusters : can(regex("^[a-z][a-z0-9-]{0,19}$", c)) && c != "server"])
    error_message = "Each client cluster name: 1-20 chars, lowercase letters, digits and '-', not 'server'."
  }
}

variable "superlink_exposure" {
  description = <<-EOT
    How SuperNodes reach the SuperLink:
    "internet-nlb": internet-facing NLB (overlay k8s/overlays/server);
    "peering":      VPC peering between every client VPC and the server VPC plus
                    an internal NLB (overlay k8s/overlays/server-peering).
  EOT
  type        = string
  default     = "internet-nlb"

  validation {
    condition     = contains(["internet-nlb", "peering"], var.superlink_exposure)
    error_message = "superlink_exposure must be \"internet-nlb\" or \"peering\"."
  }
}

variable "superlink_port" {
  description = "Port of the SuperLink (Fleet, Control and Runtime APIs share it)."
  type        = number
  default     = 8000
}

variable "vpc_cidr_base" {
  description = "Address block the per-cluster VPC CIDRs are carved from (server gets index 0, clients 1..N)."
  type        = string
  default     = "10.0.0.0/8"

  validation {
    condition     = can(cidrhost(var.vpc_cidr_base, 0))
    error_message = "vpc_cidr_base must be an IPv4 CIDR block."
  }
}

variable "vpc_newbits" {
  description = "Bits added to vpc_cidr_base for each VPC (10.0.0.0/8 + 8 = one /16 per cluster)."
  type        = number
  default     = 8

  validation {
    # Each VPC is split into four subnets; keep VPCs between /16 and /22.
    condition     = var.vpc_newbits >= 1 && tonumber(split("/", var.vpc_cidr_base)[1]) + var.vpc_newbits >= 16 && tonumber(split("/", var.vpc_cidr_base)[1]) + var.vpc_newbits <= 22
    error_message = "vpc_cidr_base prefix + vpc_newbits must give VPCs between /16 and /22."
  }

  validation {
    condition     = pow(2, var.vpc_newbits) >= length(var.client_clusters) + 1
    error_message = "vpc_newbits leaves too few VPC blocks for the server plus all client clusters."
  }
}

variable "service_ipv4_cidr" {
  description = "Kubernetes Service CIDR in every cluster; must not overlap vpc_cidr_base."
  type        = string
  default     = "172.20.0.0/16"
}

variable "kubernetes_version" {
  description = "EKS Kubernetes version (Auto Mode needs 1.29 or later)."
  type        = string
  default     = "1.33"
}

variable "endpoint_public_access_cidrs" {
  description = "CIDRs allowed to reach the clusters' public API endpoints (restrict to your operators)."
  type        = list(string)
  default     = ["0.0.0.0/0"]
}

variable "cluster_admin_principal_arns" {
  description = "Extra IAM principals (roles/users) given cluster-admin on every cluster. The creator always is."
  type        = list(string)
  default     = []
}

variable "k8s_namespace" {
  description = "Namespace of the Flower workloads (k8s/base/common/namespace.yaml)."
  type        = string
  default     = "fedheart"
}

variable "server_service_account" {
  description = "ServiceAccount of the SuperLink/ServerApp pod (k8s/base/server)."
  type        = string
  default     = "fedheart-server"
}

variable "client_service_account" {
  description = "ServiceAccount of the SuperNode pod (k8s/base/client)."
  type        = string
  default     = "fedheart-supernode"
}

variable "experiment_prefix" {
  description = "SageMaker Experiments name prefix; the IAM policies only allow experiments, trials and trial components starting with it."
  type        = string
  default     = "fed-heart-disease"

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9-]{0,59}$", var.experiment_prefix))
    error_message = "experiment_prefix: lowercase letters, digits and '-' (SageMaker lower-cases run names)."
  }
}

variable "ecr_force_delete" {
  description = "Let `terraform destroy` delete ECR repositories that still hold images."
  type        = bool
  default     = false
}

variable "tags" {
  description = "Extra tags for every resource."
  type        = map(string)
  default     = {}
}
