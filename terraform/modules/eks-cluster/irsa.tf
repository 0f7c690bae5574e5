# IAM Roles for Service Accounts: the Flower pods' ServiceAccount
# (annotated eks.amazonaws.com/role-arn) assumes a role that may only write
# this party's own SageMaker Experiments records (sagemaker.tf).

locals {
  oidc_issuer = aws_eks_cluster.this.identity[0].oidc[0].issuer
  # Issuer URL without the scheme, as used in the trust policy condition keys.
  oidc_host_path = replace(local.oidc_issuer, "https://", "")
  workload_sub   = "system:serviceaccount:${var.namespace}:${var.service_account}"
}

resource "aws_iam_openid_connect_provider" "this" {
  url            = local.oidc_issuer
  client_id_list = ["sts.amazonaws.com"]
  tags           = var.tags
}

resource "aws_iam_role" "sagemaker" {
  name        = "${var.name}-sagemaker"
  description = "SageMaker Experiments logging for ${local.workload_sub}"

  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Federated = aws_iam_openid_connect_provider.this.arn }
      Action    = "sts:AssumeRoleWithWebIdentity"
      Condition = {
        StringEquals = {
          "${local.oidc_host_path}:sub" = local.workload_sub
          "${local.oidc_host_path}:aud" = "sts.amazonaws.com"
        }
      }
    }]
  })

  tags = var.tags
}
