# One server cluster (SuperLink + ServerApp) and one cluster per hospital
# (SuperNode + ClientApp), each in its own VPC and administered by its own party only; with
# party_accounts, each in its own AWS account (provider aliases in versions.tf).

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

  # Provider settings per party (versions.tf): no assume_role and any account in the trial layout.
  parties          = ["server", "cleveland", "hungarian", "switzerland", "va"]
  assume_roles     = { for p in local.parties : p => try([var.party_accounts[p].role_arn], []) }
  allowed_accounts = { for p in local.parties : p => try([var.party_accounts[p].account_id], null) }

  # fedheart.tracking.names: the aggregator's run and client-<hospital>.
  tracking_run_names = { for key, c in local.clusters : key => key == "server" ? "aggregator" : "client-${key}" }
}

# Distinct blocks of the same size carved from one base never overlap, which
# peering (and routing between hospitals and the server in general) requires.
check "vpc_cidrs_distinct" {
  assert {
    condition     = length(distinct(values(local.vpc_cidrs))) == length(local.vpc_cidrs)
    error_message = "VPC CIDRs must be distinct: ${jsonencode(local.vpc_cidrs)}"
  }
}


# One module block per party: Terraform gives a module instance the provider (account) of its block.
module "server" {
  source    = "./modules/eks-cluster"
  providers = { aws = aws }

  name                         = local.clusters["server"].name
  vpc_cidr                     = local.clusters["server"].vpc_cidr
  availability_zones           = local.azs
  kubernetes_version           = var.kubernetes_version
  service_ipv4_cidr            = var.service_ipv4_cidr
  endpoint_public_access_cidrs = var.endpoint_public_access_cidrs
  admin_principal_arns         = var.cluster_admins["server"]
  namespace                    = var.k8s_namespace
  service_account              = local.clusters["server"].service_account
  region                       = var.region
  experiment_prefix            = var.experiment_prefix
  tracking_run_name            = local.tracking_run_names["server"]
  partition                    = local.partition

  tags = { Cluster = local.clusters["server"].name, Role = local.clusters["server"].role }
}

module "cleveland" {
  source    = "./modules/eks-cluster"
  count     = contains(var.client_clusters, "cleveland") ? 1 : 0
  providers = { aws = aws.cleveland }

  name                         = local.clusters["cleveland"].name
  vpc_cidr                     = local.clusters["cleveland"].vpc_cidr
  availability_zones           = local.azs
  kubernetes_version           = var.kubernetes_version
  service_ipv4_cidr            = var.service_ipv4_cidr
  endpoint_public_access_cidrs = var.endpoint_public_access_cidrs
  admin_principal_arns         = try(var.cluster_admins["cleveland"], [])
  namespace                    = var.k8s_namespace
  service_account              = local.clusters["cleveland"].service_account
  region                       = var.region
  experiment_prefix            = var.experiment_prefix
  tracking_run_name            = "client-cleveland"
  partition                    = local.partition

  tags = { Cluster = local.clusters["cleveland"].name, Role = local.clusters["cleveland"].role }
}

module "hungarian" {
  source    = "./modules/eks-cluster"
  count     = contains(var.client_clusters, "hungarian") ? 1 : 0
  providers = { aws = aws.hungarian }

  name                         = local.clusters["hungarian"].name
  vpc_cidr                     = local.clusters["hungarian"].vpc_cidr
  availability_zones           = local.azs
  kubernetes_version           = var.kubernetes_version
  service_ipv4_cidr            = var.service_ipv4_cidr
  endpoint_public_access_cidrs = var.endpoint_public_access_cidrs
  admin_principal_arns         = try(var.cluster_admins["hungarian"], [])
  namespace                    = var.k8s_namespace
  service_account              = local.clusters["hungarian"].service_account
  region                       = var.region
  experiment_prefix            = var.experiment_prefix
  tracking_run_name            = "client-hungarian"
  partition                    = local.partition

  tags = { Cluster = local.clusters["hungarian"].name, Role = local.clusters["hungarian"].role }
}

module "switzerland" {
  source    = "./modules/eks-cluster"
  count     = contains(var.client_clusters, "switzerland") ? 1 : 0
  providers = { aws = aws.switzerland }

  name                         = local.clusters["switzerland"].name
  vpc_cidr                     = local.clusters["switzerland"].vpc_cidr
  availability_zones           = local.azs
  kubernetes_version           = var.kubernetes_version
  service_ipv4_cidr            = var.service_ipv4_cidr
  endpoint_public_access_cidrs = var.endpoint_public_access_cidrs
  admin_principal_arns         = try(var.cluster_admins["switzerland"], [])
  namespace                    = var.k8s_namespace
  service_account              = local.clusters["switzerland"].service_account
  region                       = var.region
  experiment_prefix            = var.experiment_prefix
  tracking_run_name            = "client-switzerland"
  partition                    = local.partition

  tags = { Cluster = local.clusters["switzerland"].name, Role = local.clusters["switzerland"].role }
}

module "va" {
  source    = "./modules/eks-cluster"
  count     = contains(var.client_clusters, "va") ? 1 : 0
  providers = { aws = aws.va }

  name                         = local.clusters["va"].name
  vpc_cidr                     = local.clusters["va"].vpc_cidr
  availability_zones           = local.azs
  kubernetes_version           = var.kubernetes_version
  service_ipv4_cidr            = var.service_ipv4_cidr
  endpoint_public_access_cidrs = var.endpoint_public_access_cidrs
  admin_principal_arns         = try(var.cluster_admins["va"], [])
  namespace                    = var.k8s_namespace
  service_account              = local.clusters["va"].service_account
  region                       = var.region
  experiment_prefix            = var.experiment_prefix
  tracking_run_name            = "client-va"
  partition                    = local.partition

  tags = { Cluster = local.clusters["va"].name, Role = local.clusters["va"].role }
}

locals {
  # Every party's cluster module by key, as module.cluster[key] was.
  cluster = merge({ server = module.server }, {
    for key, instances in {
      cleveland   = module.cleveland
      hungarian   = module.hungarian
      switzerland = module.switzerland
      va          = module.va
    } : key => instances[0] if length(instances) > 0
  })
}
