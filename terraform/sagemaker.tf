# Least-privilege SageMaker Experiments policy shared by the server and the
# client workload roles: the SDK's Run creates (or loads) an experiment, a
# "Default-Run-Group-<experiment>" trial and a "<experiment>-<run>" trial
# component, associates them and writes parameters and metrics.

locals {
  sagemaker_arn = "arn:${local.partition}:sagemaker:${var.region}:${local.account_id}"

  sagemaker_resources = [
    "${local.sagemaker_arn}:experiment/${var.experiment_prefix}*",
    "${local.sagemaker_arn}:experiment-trial/${var.experiment_prefix}*",
    "${local.sagemaker_arn}:experiment-trial/default-run-group-${var.experiment_prefix}*",
    "${local.sagemaker_arn}:experiment-trial-component/${var.experiment_prefix}*",
  ]

  sagemaker_write_actions = [
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
  ]

  # List and Search calls do not support resource-level permissions.
  sagemaker_list_actions = [
    "sagemaker:ListExperiments",
    "sagemaker:ListTrialComponents",
    "sagemaker:ListTrials",
    "sagemaker:Search",
  ]

  sagemaker_policy_json = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid      = "ExperimentsWithPrefix"
        Effect   = "Allow"
        Action   = local.sagemaker_write_actions
        Resource = local.sagemaker_resources
      },
      {
        Sid      = "ExperimentsReadOnlyLists"
        Effect   = "Allow"
        Action   = local.sagemaker_list_actions
        Resource = "*"
      },
    ]
  })
}
