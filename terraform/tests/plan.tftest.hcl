# Plan-level checks with a mocked AWS provider: no credentials, no network.
# Run: terraform -chdir=terraform test   (after init against the provider mirror)

mock_provider "aws" {
  mock_data "aws_caller_identity" {
    defaults = {
      account_id = "111122223333"
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
}

run "default_two_clients_internet_nlb" {
  command = plan

  assert {
    condition     = length(module.cluster) == 3
    error_message = "Expected one server and two client clusters by default."
  }

  assert {
    condition     = toset(keys(module.cluster)) == toset(["server", "cleveland", "hungarian"])
    error_message = "Unexpected cluster keys: ${jsonencode(keys(module.cluster))}"
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
    condition     = toset(keys(aws_ecr_repository.image)) == toset(["superlink", "supernode", "superexec"])
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

  # SageMaker Experiments policy shared by the workload roles.
  assert {
    condition = toset(jsondecode(local.sagemaker_policy_json).Statement[0].Action) == toset([
      "sagemaker:AddTags",
      "sagemaker:AssociateTrialComponent",
      "sagemaker:BatchPutMetrics",
      "sagemaker:CreateExperiment",
      "sagemaker:CreateTrial",
      "sagemaker:CreateTrialComponent",
      "sagemaker:DescribeExperiment",
      "sagemaker:DescribeTrial",
      "sagemaker:DescribeTrialComponent",
      "sagemaker:ListTags",
      "sagemaker:UpdateExperiment",
      "sagemaker:UpdateTrial",
      "sagemaker:UpdateTrialComponent",
    ])
    error_message = "Unexpected resource-scoped SageMaker actions."
  }

  assert {
    condition     = alltrue([for s in jsondecode(local.sagemaker_policy_json).Statement : alltrue([for a in flatten([s.Action]) : startswith(a, "sagemaker:") && !strcontains(a, "*")])])
    error_message = "Only named sagemaker: actions, no wildcards."
  }

  assert {
    condition = alltrue([for a in jsondecode(local.sagemaker_policy_json).Statement[1].Action :
    startswith(a, "sagemaker:List") || a == "sagemaker:Search"])
    error_message = "Only List*/Search (no resource-level permissions) may use Resource \"*\"."
  }

  assert {
    condition = toset(jsondecode(local.sagemaker_policy_json).Statement[0].Resource) == toset([
      "arn:aws:sagemaker:eu-central-1:111122223333:experiment/fed-heart-disease*",
      "arn:aws:sagemaker:eu-central-1:111122223333:experiment-trial/fed-heart-disease*",
      "arn:aws:sagemaker:eu-central-1:111122223333:experiment-trial/default-run-group-fed-heart-disease*",
      "arn:aws:sagemaker:eu-central-1:111122223333:experiment-trial-component/fed-heart-disease*",
    ])
    error_message = "Write actions must be limited to experiment, trial and trial-component ARNs with the prefix."
  }

  assert {
    condition     = alltrue([for k, m in module.cluster : m.sagemaker_role_name == "fedheart-${k}-sagemaker"])
    error_message = "One SageMaker role per cluster, named <name_prefix>-<cluster>-sagemaker."
  }

  assert {
    condition     = module.cluster["server"].workload_subject == "system:serviceaccount:fedheart:fedheart-server" && module.cluster["cleveland"].workload_subject == "system:serviceaccount:fedheart:fedheart-supernode"
    error_message = "IRSA subjects must match the ServiceAccounts in k8s/base."
  }
}

run "custom_name_prefix" {
  command = plan

  variables {
    name_prefix       = "heart"
    experiment_prefix = "heart-trial"
    region            = "us-west-2"
  }

  assert {
    condition     = alltrue([for k, m in module.cluster : m.cluster_name == "heart-${k}" && m.sagemaker_role_name == "heart-${k}-sagemaker"])
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
    condition     = alltrue([for r in jsondecode(local.sagemaker_policy_json).Statement[0].Resource : startswith(r, "arn:aws:sagemaker:us-west-2:111122223333:") && strcontains(r, "heart-trial*")])
    error_message = "Resources follow experiment_prefix and region."
  }
}

run "four_hospitals_with_peering" {
  command = plan

  variables {
    client_clusters    = ["cleveland", "hungarian", "switzerland", "va"]
    superlink_exposure = "peering"
  }

  assert {
    condition     = length(module.cluster) == 5
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
}

run "rejects_unknown_exposure" {
  command = plan

  variables {
    superlink_exposure = "public-ip"
  }

  expect_failures = [var.superlink_exposure]
}

run "rejects_duplicate_clients" {
  command = plan

  variables {
    client_clusters = ["cleveland", "cleveland"]
  }

  expect_failures = [var.client_clusters]
}

run "rejects_too_few_vpc_blocks" {
  command = plan

  variables {
    vpc_cidr_base   = "10.0.0.0/14"
    vpc_newbits     = 2
    client_clusters = ["cleveland", "hungarian", "switzerland", "va"]
  }

  expect_failures = [var.vpc_newbits]
}
