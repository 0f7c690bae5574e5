# One server cluster (SuperLink + ServerApp) and one cluster per hospital
# (SuperNode + ClientApp), each in its own VPC.

data "aws_partition" "current" {}
data "aws_caller_identity" "current" {}

data "aws_availability_zones" "available" {
  state = "available"

  filter {
    name   = "opt-in-status"
    values = ["opt-in-not-required"]
  }
}

locals {
  partition  = data.aws_partition.current.partition
  account_id = data.aws_caller_identity.current.account_id
  azs        = slice(data.aws_availability_zones.available.names, 0, 2)

  # Cluster key -> index into vpc_cidr_base; the server is always 0.
  cluster_keys = concat(["server"], var.client_clusters)

  clusters = {
    for i, key in local.cluster_keys : key => {
      name     = "${var.name_prefix}-${key}"
      role     = key == "server" ? "server" : "client"
      vpc_cidr = cidrsubnet(var.vpc_cidr_base, var.vpc_newbits, i)
      service_account = (
        key == "server" ? var.server_service_account : var.client_service_account
      )
    }
  }

  vpc_cidrs = { for key, c in local.clusters : key => c.vpc_cidr }
}

# Distinct blocks of the same size carved from one base never overlap, which
# peering (and routing between hospitals and the server in general) requires.
check "vpc_cidrs_distinct" {
  assert {
    condition     = length(distinct(values(local.vpc_cidrs))) == length(local.vpc_cidrs)
    error_message = "VPC CIDRs must be distinct: ${jsonencode(local.vpc_cidrs)}"
  }
}

module "cluster" {
  source   = "./modules/eks-cluster"
  for_each = local.clusters

  name                         = each.value.name
  vpc_cidr                     = each.value.vpc_cidr
  availability_zones           = local.azs
  kubernetes_version           = var.kubernetes_version
  service_ipv4_cidr            = var.service_ipv4_cidr
  endpoint_public_access_cidrs = var.endpoint_public_access_cidrs
  admin_principal_arns         = var.cluster_admin_principal_arns
  namespace                    = var.k8s_namespace
  service_account              = each.value.service_account
  sagemaker_policy_json        = local.sagemaker_policy_json
  partition                    = local.partition

  tags = {
    Cluster = each.value.name
    Role    = each.value.role
  }
}
