# Plan-level checks with a mocked AWS provider: no credentials, no network.
# Run: terraform -chdir=terraform test   (after init against the provider mirror)

mock_provider "aws" {
  mock_data "aws_caller_identity" {
    defaults = {
      account_id = "111122223333"
    }
  }

  mock_resource "aws_iam_role" {
    defaults = {
      arn = "arn:aws:iam::111122223333:role/mock"
    }
  }

  mock_resource "aws_kms_key" {
    defaults = {
      arn = "arn:aws:kms:eu-central-1:111122223333:key/00000000-0000-0000-0000-000000000000"
    }
  }

  mock_resource "aws_eks_cluster" {
    defaults = {
      arn = "arn:aws:eks:eu-central-1:111122223333:cluster/mock"
      identity = [{
        oidc = [{ issuer = "https://oidc.eks.eu-central-1.amazonaws.com/id/111122223333" }]
      }]
    }
  }

  mock_resource "aws_iam_openid_connect_provider" {
    defaults = {
      arn = "arn:aws:iam::111122223333:oidc-provider/oidc.eks.eu-central-1.amazonaws.com/id/111122223333"
    }
  }

  mock_data "aws_partition" {
    defaults = {
      partition = "aws"
    }
  }

  mock_data "aws_availability_zones" {
    defaults = {
      names = ["eu-central-1a", "eu-central-1b", "eu-central-1c"]
    }
  }

  mock_resource "aws_eip" {
    defaults = {
      public_ip     = "198.51.100.10"
      allocation_id = "eipalloc-0server"
    }
  }
}

variables {
  endpoint_public_access_cidrs = ["203.0.113.0/24"]
  cluster_admins = {
    server    = ["arn:aws:iam::111122223333:role/aggregator-admin"]
    cleveland = ["arn:aws:iam::111122223333:role/cleveland-admin"]
    hungarian = ["arn:aws:iam::111122223333:role/hungarian-admin"]
  }
}

# Applied against the mocks, so the NAT and NLB addresses exist.
run "default_two_clients_internet_nlb" {
  command = apply

  # Every party's provider is the one mocked account (the trial layout).
  providers = {
    aws             = aws
    aws.cleveland   = aws
    aws.hungarian   = aws
    aws.switzerland = aws
    aws.va          = aws
  }

  variables {
    superlink_extra_source_cidrs = ["192.0.2.0/28"]
  }

  assert {
    condition     = length(local.cluster) == 3
    error_message = "Expected one server and two client clusters by default."
  }

  assert {
    condition     = toset(keys(local.cluster)) == toset(["server", "cleveland", "hungarian"])
    error_message = "Unexpected cluster keys: ${jsonencode(keys(local.cluster))}"
  }

  assert {
    condition     = output.cluster_names["server"] == "fedheart-server" && output.cluster_names["cleveland"] == "fedheart-cleveland"
    error_message = "Cluster names must be <name_prefix>-<key> (the k8s overlays and docs rely on it)."
  }

  assert {
    condition     = length(distinct(values(output.vpc_cidrs))) == 3
    error_message = "VPC CIDRs must be distinct."
  }

  assert {
    condition     = output.vpc_cidrs["server"] == "10.0.0.0/16" && output.vpc_cidrs["cleveland"] == "10.1.0.0/16" && output.vpc_cidrs["hungarian"] == "10.2.0.0/16"
    error_message = "VPC CIDRs must be carved from vpc_cidr_base in cluster order: ${jsonencode(output.vpc_cidrs)}"
  }

  assert {
    condition     = length(aws_vpc_peering_connection.client_to_server) == 0 && length(aws_route.client_to_server) == 0
    error_message = "No peering with superlink_exposure = internet-nlb."
  }

  assert {
    condition     = output.server_overlay == "k8s/overlays/server"
    error_message = "internet-nlb exposure uses the internet-facing server overlay."
  }

  assert {
    condition     = toset(keys(aws_ecr_repository.image)) == toset(["superlink", "supernode", "superexec", "fleet-proxy"])
    error_message = "One ECR repository per image."
  }

  assert {
    condition     = alltrue([for r in aws_ecr_repository.image : r.image_tag_mutability == "IMMUTABLE" && startswith(r.name, "fedheart/")])
    error_message = "ECR repositories: immutable tags, named fedheart/<image>."
  }

  assert {
    condition     = output.kubeconfig_commands["hungarian"] == "aws eks update-kubeconfig --region eu-central-1 --name fedheart-hungarian --alias fedheart-hungarian"
    error_message = "Unexpected kubeconfig command: ${output.kubeconfig_commands["hungarian"]}"
  }

  assert {
    condition     = output.ecr_registry == "111122223333.dkr.ecr.eu-central-1.amazonaws.com"
    error_message = "Unexpected ECR registry: ${output.ecr_registry}"
  }

  assert {
    condition     = strcontains(output.superlink_address_command, "--context fedheart-server -n fedheart get service superlink") && endswith(output.superlink_address_command, ":8000\"")
    error_message = "The SuperLink address command must query the superlink Service and append port 8000."
  }

  # One SageMaker Experiments policy per party: its own trial components only.
  assert {
    condition = alltrue([for k, policy in output.sagemaker_policies : toset(jsondecode(policy).Statement[0].Resource) == toset([
      "arn:aws:sagemaker:eu-central-1:${output.party_accounts[k]}:experiment-trial-component/fed-heart-disease-*-${k == "server" ? "aggregator" : "client-${k}"}",
    ])])
    error_message = "Each party's trial-component actions must be limited to its own run name: ${jsonencode(output.sagemaker_policies)}"
  }

  assert {
    condition     = length(distinct(values(output.sagemaker_policies))) == 3
    error_message = "One distinct SageMaker policy per party."
  }

  assert {
    condition     = alltrue([for policy in values(output.sagemaker_policies) : alltrue([for s in jsondecode(policy).Statement : alltrue([for a in flatten([s.Action]) : startswith(a, "sagemaker:") && !strcontains(a, "*")])])])
    error_message = "Only named sagemaker: actions, no wildcards."
  }

  assert {
    condition     = alltrue([for policy in values(output.sagemaker_policies) : alltrue([for s in jsondecode(policy).Statement : s.Resource != "*" || flatten([s.Action]) == ["sagemaker:ListTrialComponents"]])])
    error_message = "Only ListTrialComponents (no resource-level permissions, summaries only) may use Resource \"*\"; never Search."
  }

  assert {
    condition     = alltrue([for policy in values(output.sagemaker_policies) : !contains(flatten([for s in jsondecode(policy).Statement : s.Action]), "sagemaker:Search")])
    error_message = "No party may Search: it reads every party's parameters and metrics in the account."
  }

  assert {
    condition = alltrue([for k, policy in output.sagemaker_policies : alltrue([for s in jsondecode(policy).Statement : alltrue([
      for r in flatten([s.Resource]) : r == "*" || !strcontains(r, "experiment-trial-component/") || endswith(r, k == "server" ? "-aggregator" : "-client-${k}")
    ])])])
    error_message = "No party's policy names another party's trial components."
  }

  # Each cluster is administered by its own party only; the creator gets nothing.
  assert {
    condition     = alltrue([for k, m in local.cluster : m.creator_is_admin == false])
    error_message = "bootstrap_cluster_creator_admin_permissions must be false on every cluster."
  }

  assert {
    condition     = output.cluster_admin_principals == { for k, v in var.cluster_admins : k => sort(v) }
    error_message = "Each cluster's admins are exactly its party's cluster_admins: ${jsonencode(output.cluster_admin_principals)}"
  }

  assert {
    condition     = !anytrue([for k, admins in output.cluster_admin_principals : k != "server" && anytrue([for a in admins : contains(var.cluster_admins["server"], a)])])
    error_message = "The aggregator's operators must not administer a hospital's cluster."
  }

  assert {
    condition     = alltrue([for k, m in local.cluster : toset(keys(m.interface_endpoint_services)) == toset(["sagemaker.api", "sagemaker.metrics", "sts"])])
    error_message = "Every VPC gets interface endpoints for the SageMaker API, SageMaker Metrics and STS."
  }

  assert {
    condition     = alltrue([for k, m in local.cluster : m.sagemaker_role_name == "fedheart-${k}-sagemaker"])
    error_message = "One SageMaker role per cluster, named <name_prefix>-<cluster>-sagemaker."
  }

  assert {
    condition     = local.cluster["server"].workload_subject == "system:serviceaccount:fedheart:fedheart-server" && local.cluster["cleveland"].workload_subject == "system:serviceaccount:fedheart:fedheart-supernode"
    error_message = "IRSA subjects must match the ServiceAccounts in k8s/base."
  }
  assert {
    condition     = output.fleet_source_ranges == distinct(concat([for k in ["cleveland", "hungarian"] : "${local.cluster[k].nat_public_ip}/32"], ["192.0.2.0/28"]))
    error_message = "internet-nlb: the hospitals' NAT addresses and the extra CIDRs, nothing else: ${jsonencode(output.fleet_source_ranges)}"
  }

  assert {
    condition     = !anytrue([for c in output.fleet_source_ranges : tonumber(split("/", c)[1]) < 8])
    error_message = "No open source range."
  }

  assert {
    condition     = length(aws_eip.superlink) == 2 && output.superlink_egress_cidrs == tolist([for e in aws_eip.superlink : "${e.public_ip}/32"]) && output.superlink_eip_allocations == join(",", aws_eip.superlink[*].allocation_id)
    error_message = "The NLB gets two Elastic IPs; hospitals may dial only those."
  }

  assert {
    condition     = strcontains(output.superlink_addresses_yaml, "kind: SuperLinkAddresses") && strcontains(output.superlink_addresses_yaml, "  - ipBlock: {cidr: ${aws_eip.superlink[0].public_ip}/32}\n")
    error_message = "superlink_addresses_yaml is the hospital overlays' superlink-addresses.yaml: ${output.superlink_addresses_yaml}"
  }

  assert {
    condition     = output.nlb_health_check_cidrs == tolist(["10.0.0.0/18", "10.0.64.0/18"])
    error_message = "The internet-facing NLB's nodes live in the server's public subnets."
  }

  assert {
    condition     = strcontains(output.fleet_source_ranges_yaml, "kind: FleetSourceRanges") && strcontains(output.fleet_source_ranges_yaml, "- ipBlock: {cidr: 192.0.2.0/28}") && strcontains(output.fleet_source_ranges_yaml, "  - 192.0.2.0/28\n")
    error_message = "fleet_source_ranges_yaml is the overlay's source-ranges.yaml: ${output.fleet_source_ranges_yaml}"
  }
  assert {
    condition     = alltrue([for k, r in local.assume_roles : r == []]) && alltrue([for k, a in local.allowed_accounts : a == null]) && length(aws_ecr_repository_policy.supernode_pull) == 0
    error_message = "Without party_accounts every party uses the caller's own account (trials only)."
  }
}

run "four_hospitals_with_peering_and_a_custom_name_prefix" {
  command = plan

  # Every party's provider is the one mocked account (the trial layout).
  providers = {
    aws             = aws
    aws.cleveland   = aws
    aws.hungarian   = aws
    aws.switzerland = aws
    aws.va          = aws
  }

  variables {
    client_clusters    = ["cleveland", "hungarian", "switzerland", "va"]
    superlink_exposure = "peering"
    name_prefix        = "heart"
    experiment_prefix  = "heart-trial"
    region             = "us-west-2"
    cluster_admins = {
      server      = ["arn:aws:iam::111122223333:role/aggregator-admin"]
      cleveland   = ["arn:aws:iam::111122223333:role/cleveland-admin"]
      hungarian   = ["arn:aws:iam::111122223333:role/hungarian-admin"]
      switzerland = ["arn:aws:iam::111122223333:role/switzerland-admin"]
      va          = ["arn:aws:iam::111122223333:role/va-admin"]
    }
  }

  assert {
    condition     = length(local.cluster) == 5
    error_message = "Expected one server and four client clusters."
  }

  assert {
    condition     = length(distinct(values(output.vpc_cidrs))) == 5
    error_message = "VPC CIDRs must be distinct: ${jsonencode(output.vpc_cidrs)}"
  }

  assert {
    condition     = toset(keys(aws_vpc_peering_connection.client_to_server)) == toset(["cleveland", "hungarian", "switzerland", "va"])
    error_message = "One peering connection per client cluster."
  }

  assert {
    condition     = alltrue([for p in aws_vpc_peering_connection.client_to_server : p.auto_accept])
    error_message = "Same-account peering must be auto-accepted."
  }

  assert {
    condition     = alltrue([for k, r in aws_route.client_to_server : r.destination_cidr_block == "10.0.0.0/16"])
    error_message = "Client private route tables must route the server VPC CIDR through the peering."
  }

  assert {
    condition     = toset([for r in aws_route.server_to_client : r.destination_cidr_block]) == toset(["10.1.0.0/16", "10.2.0.0/16", "10.3.0.0/16", "10.4.0.0/16"])
    error_message = "The server private route table must route every client VPC CIDR back."
  }

  assert {
    condition     = output.server_overlay == "k8s/overlays/server-peering"
    error_message = "Peering exposure uses the internal-NLB server overlay."
  }

  assert {
    condition     = output.fleet_source_ranges == tolist(["10.1.0.0/16", "10.2.0.0/16", "10.3.0.0/16", "10.4.0.0/16"])
    error_message = "With peering the SuperLink admits the hospital VPCs only: ${jsonencode(output.fleet_source_ranges)}"
  }

  assert {
    condition     = output.superlink_egress_cidrs == tolist(["10.0.128.0/18", "10.0.192.0/18"]) && output.nlb_health_check_cidrs == tolist(["10.0.128.0/18", "10.0.192.0/18"]) && length(aws_eip.superlink) == 0
    error_message = "With peering hospitals dial the server's private subnets (the internal NLB)."
  }
  assert {
    condition     = alltrue([for k, m in local.cluster : m.cluster_name == "heart-${k}" && m.sagemaker_role_name == "heart-${k}-sagemaker"])
    error_message = "Cluster and role names follow name_prefix."
  }

  assert {
    condition     = alltrue([for r in aws_ecr_repository.image : startswith(r.name, "heart/")])
    error_message = "ECR repositories follow name_prefix."
  }

  assert {
    condition     = strcontains(output.superlink_address_command, "--context heart-server ")
    error_message = "The address command uses the server cluster's context."
  }

  assert {
    condition     = alltrue([for k, p in output.sagemaker_policies : alltrue([for r in jsondecode(p).Statement[0].Resource : startswith(r, "arn:aws:sagemaker:us-west-2:${output.party_accounts[k]}:") && strcontains(r, "heart-trial-*")])])
    error_message = "Resources follow experiment_prefix and region."
  }
}

# Bad input, several variables per run (each validation is independent of the others).
run "rejects_open_ranges_and_an_aggregator_admin_at_a_hospital" {
  command = plan

  # Every party's provider is the one mocked account (the trial layout).
  providers = {
    aws             = aws
    aws.cleveland   = aws
    aws.hungarian   = aws
    aws.switzerland = aws
    aws.va          = aws
  }

  variables {
    endpoint_public_access_cidrs = ["0.0.0.0/0"]
    superlink_extra_source_cidrs = ["0.0.0.0/0"]
    cluster_admins = {
      server    = ["arn:aws:iam::111122223333:role/aggregator-admin"]
      cleveland = ["arn:aws:iam::111122223333:role/cleveland-admin", "arn:aws:iam::111122223333:role/aggregator-admin"]
      hungarian = ["arn:aws:iam::111122223333:role/hungarian-admin"]
    }
  }

  expect_failures = [var.endpoint_public_access_cidrs, var.superlink_extra_source_cidrs, var.cluster_admins]
}

run "rejects_too_few_vpc_blocks_and_clusters_without_admins" {
  command = plan

  # Every party's provider is the one mocked account (the trial layout).
  providers = {
    aws             = aws
    aws.cleveland   = aws
    aws.hungarian   = aws
    aws.switzerland = aws
    aws.va          = aws
  }

  variables {
    vpc_cidr_base   = "10.0.0.0/14"
    vpc_newbits     = 2
    client_clusters = ["cleveland", "hungarian", "switzerland", "va"]
  }

  expect_failures = [var.vpc_newbits, var.cluster_admins]
}

run "rejects_duplicate_clients_and_an_unknown_exposure" {
  command = plan

  # Every party's provider is the one mocked account (the trial layout).
  providers = {
    aws             = aws
    aws.cleveland   = aws
    aws.hungarian   = aws
    aws.switzerland = aws
    aws.va          = aws
  }

  variables {
    client_clusters    = ["cleveland", "cleveland"]
    superlink_exposure = "public-ip"
    cluster_admins = {
      server    = ["arn:aws:iam::111122223333:role/aggregator-admin"]
      cleveland = ["arn:aws:iam::111122223333:role/cleveland-admin"]
    }
  }

  expect_failures = [var.client_clusters, var.superlink_exposure]
}

run "rejects_peering_across_accounts" {
  command = plan

  # Every party's provider is the one mocked account (the trial layout).
  providers = {
    aws             = aws
    aws.cleveland   = aws
    aws.hungarian   = aws
    aws.switzerland = aws
    aws.va          = aws
  }

  variables {
    client_clusters    = ["cleveland"]
    superlink_exposure = "peering"
    party_accounts = {
      server    = { account_id = "111122223333", role_arn = "arn:aws:iam::111122223333:role/fedheart-terraform" }
      cleveland = { account_id = "222233334444", role_arn = "arn:aws:iam::222233334444:role/fedheart-terraform" }
    }
    cluster_admins = {
      server    = ["arn:aws:iam::111122223333:role/aggregator-admin"]
      cleveland = ["arn:aws:iam::222233334444:role/cleveland-admin"]
    }
  }

  expect_failures = [var.party_accounts]
}

run "rejects_admins_from_another_account" {
  command = plan

  # Every party's provider is the one mocked account (the trial layout).
  providers = {
    aws             = aws
    aws.cleveland   = aws
    aws.hungarian   = aws
    aws.switzerland = aws
    aws.va          = aws
  }

  variables {
    client_clusters = ["cleveland"]
    party_accounts = {
      server    = { account_id = "111122223333", role_arn = "arn:aws:iam::111122223333:role/fedheart-terraform" }
      cleveland = { account_id = "222233334444", role_arn = "arn:aws:iam::222233334444:role/fedheart-terraform" }
    }
    cluster_admins = {
      server    = ["arn:aws:iam::111122223333:role/aggregator-admin"]
      cleveland = ["arn:aws:iam::111122223333:role/cleveland-admin"]
    }
  }

  expect_failures = [var.cluster_admins]
}
