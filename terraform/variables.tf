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
    client_clusters = ["cleveland", "hungarian", "switzerland", "va"]. Each name has
    its k8s/overlays/client-<name> overlay and its provider alias (versions.tf).
  EOT
  type        = list(string)
  default     = ["cleveland", "hungarian"]

  validation {
    condition     = length(var.client_clusters) >= 1 && length(var.client_clusters) == length(distinct(var.client_clusters))
    error_message = "client_clusters must hold at least one name, without duplicates."
  }

  validation {
    # One provider alias per hospital (versions.tf) and one k8s overlay each.
    condition     = alltrue([for c in var.client_clusters : contains(["cleveland", "hungarian", "switzerland", "va"], c)])
    error_message = "Each client cluster is one of the four hospitals: cleveland, hungarian, switzerland, va."
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
  description = "CIDRs allowed to reach the clusters' public Kubernetes API endpoints: your operators' addresses. Required, no open default."
  type        = list(string)

  validation {
    condition     = length(var.endpoint_public_access_cidrs) >= 1 && alltrue([for c in var.endpoint_public_access_cidrs : can(cidrhost(c, 0)) && tonumber(split("/", c)[1]) >= 8])
    error_message = "endpoint_public_access_cidrs: at least one IPv4 CIDR, none wider than /8 (never 0.0.0.0/0)."
  }
}

variable "cluster_admins" {
  description = <<-EOT
    Party (server and each client cluster) -> the IAM principals (role or user ARNs) given
    cluster-admin on that party's cluster, and on no other. Required: the cluster's creator gets no
    admin from creating it (bootstrap_cluster_creator_admin_permissions = false), so a hospital's
    cluster is administered by the hospital's own principals only, never by the aggregator's.
  EOT
  type        = map(list(string))

  validation {
    condition     = toset(keys(var.cluster_admins)) == toset(concat(["server"], var.client_clusters)) && alltrue([for p in values(var.cluster_admins) : length(p) >= 1])
    error_message = "cluster_admins needs one non-empty list per party: server and every client cluster, no other key."
  }

  validation {
    condition     = length(flatten(values(var.cluster_admins))) == length(distinct(flatten(values(var.cluster_admins))))
    error_message = "An IAM principal may administer one party's cluster only (the aggregator's operators are no admins at a hospital, nor one hospital's at another)."
  }

  validation {
    condition = length(var.party_accounts) == 0 || alltrue([
      for party, principals in var.cluster_admins : alltrue([
        for arn in principals : try(split(":", arn)[4] == var.party_accounts[party].account_id, false)
      ])
    ])
    error_message = "With party_accounts, each party's admin principals must belong to that party's own account."
  }
}

variable "party_accounts" {
  description = <<-EOT
    Production layout: one AWS account per party. Party (server and each client cluster) ->
    {account_id, role_arn}: terraform assumes role_arn (in that account) for the party's resources,
    through the provider aliases of versions.tf. Empty (the default): the single-account layout,
    for trials only.
  EOT
  type = map(object({
    account_id = string
    role_arn   = string
  }))
  default = {}

  validation {
    condition     = length(var.party_accounts) == 0 || toset(keys(var.party_accounts)) == toset(concat(["server"], var.client_clusters))
    error_message = "party_accounts: none (single account) or exactly one entry per party (server and every client cluster)."
  }

  validation {
    condition     = alltrue([for a in values(var.party_accounts) : can(regex("^[0-9]{12}$", a.account_id)) && try(split(":", a.role_arn)[4] == a.account_id, false)])
    error_message = "party_accounts: account_id is 12 digits and role_arn a role in that same account."
  }

  validation {
    condition     = length(distinct([for a in values(var.party_accounts) : a.account_id])) == length(var.party_accounts)
    error_message = "party_accounts: every party needs its own account."
  }

  validation {
    condition     = length(var.party_accounts) == 0 || var.superlink_exposure == "internet-nlb"
    error_message = "One account per party supports superlink_exposure = \"internet-nlb\" (cross-account peering is not automated)."
  }
}

variable "superlink_extra_source_cidrs" {
  description = "Addresses admitted to the SuperLink's public port besides the hospitals' own (their NAT addresses, or VPCs with peering). No open default; never 0.0.0.0/0."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.superlink_extra_source_cidrs : can(cidrhost(c, 0)) && tonumber(split("/", c)[1]) >= 8])
    error_message = "superlink_extra_source_cidrs: IPv4 CIDRs, none wider than /8 (never 0.0.0.0/0)."
  }
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
