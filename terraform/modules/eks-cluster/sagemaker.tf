# This party's SageMaker Experiments policy: the SDK's Run creates (or loads) the run's experiment
# "<prefix>-<time>-<run id>", its trial "Default-Run-Group-<experiment>" and this party's own trial
# component "<experiment>-<tracking_run_name>" (aggregator, or client-<hospital>), associates them
# and writes parameters and metrics. Writes, reads (Describe*) and tags of trial components are
# limited to this party's own run name: a hospital cannot read or change another hospital's or the
# aggregator's records. Experiments and trials are shared containers (no metrics): create and
# describe only, never update. sagemaker:Search is not granted: it has no resource-level permissions and
# returns every trial component's parameters and metrics in the account. The SDK's only search (is
# this party's trial component in its trial yet?) is answered with ListTrialComponents filtered by
# the trial (fedheart/tracking/sagemaker.py NoSearchClient), which lists names and times only.

data "aws_caller_identity" "current" {}

locals {
  sagemaker_arn = "arn:${var.partition}:sagemaker:${var.region}:${data.aws_caller_identity.current.account_id}"

  sagemaker_containers = [
    "${local.sagemaker_arn}:experiment/${var.experiment_prefix}-*",
    "${local.sagemaker_arn}:experiment-trial/default-run-group-${var.experiment_prefix}-*",
  ]
  # Only this party's runs: "<prefix>-<time>-<run id>-<tracking_run_name>".
  sagemaker_own_components = [
    "${local.sagemaker_arn}:experiment-trial-component/${var.experiment_prefix}-*-${var.tracking_run_name}",
  ]

  sagemaker_policy = {
    Version = "2012-10-17"
    Statement = [
      {
        Sid      = "OwnTrialComponents"
        Effect   = "Allow"
        Action   = ["sagemaker:AddTags", "sagemaker:BatchPutMetrics", "sagemaker:CreateTrialComponent", "sagemaker:DescribeTrialComponent", "sagemaker:ListTags", "sagemaker:UpdateTrialComponent"]
        Resource = local.sagemaker_own_components
      },
      {
        Sid      = "SharedExperimentAndTrial"
        Effect   = "Allow"
        Action   = ["sagemaker:CreateExperiment", "sagemaker:CreateTrial", "sagemaker:DescribeExperiment", "sagemaker:DescribeTrial"]
        Resource = local.sagemaker_containers
      },
      {
        Sid      = "AssociateOwnComponent"
        Effect   = "Allow"
        Action   = ["sagemaker:AssociateTrialComponent"]
        Resource = concat([local.sagemaker_containers[1]], local.sagemaker_own_components)
      },
      {
        # No resource-level permissions exist for ListTrialComponents: summaries (names, times), no values.
        Sid      = "ListTrialMembership"
        Effect   = "Allow"
        Action   = ["sagemaker:ListTrialComponents"]
        Resource = "*"
      },
    ]
  }
}

resource "aws_iam_role_policy" "sagemaker" {
  name   = "sagemaker-experiments-${var.tracking_run_name}"
  role   = aws_iam_role.sagemaker.id
  policy = jsonencode(local.sagemaker_policy)
}
