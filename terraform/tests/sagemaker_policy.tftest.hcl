# The SageMaker Experiments policy attached to every workload role.

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
      names = ["eu-central-1a", "eu-central-1b"]
    }
  }
}

run "least_privilege_actions" {
  command = plan

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

run "custom_prefix_and_region" {
  command = plan

  variables {
    experiment_prefix = "heart-trial"
    region            = "us-west-2"
  }

  assert {
    condition     = alltrue([for r in jsondecode(local.sagemaker_policy_json).Statement[0].Resource : startswith(r, "arn:aws:sagemaker:us-west-2:111122223333:") && strcontains(r, "heart-trial*")])
    error_message = "Resources follow experiment_prefix and region."
  }
}
