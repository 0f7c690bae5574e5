# The per-cluster module on its own, "applied" against a mocked AWS provider so
# computed values (OIDC issuer, ARNs) exist and IAM documents can be inspected.

mock_provider "aws" {
  mock_resource "aws_eks_cluster" {
    defaults = {
      arn = "arn:aws:eks:eu-central-1:111122223333:cluster/fedheart-cleveland"
      identity = [{
        oidc = [{ issuer = "https://oidc.eks.eu-central-1.amazonaws.com/id/0123456789ABCDEF" }]
      }]
    }
  }

  mock_resource "aws_iam_openid_connect_provider" {
    defaults = {
      arn = "arn:aws:iam::111122223333:oidc-provider/oidc.eks.eu-central-1.amazonaws.com/id/0123456789ABCDEF"
    }
  }

  mock_resource "aws_iam_role" {
    defaults = {
      arn = "arn:aws:iam::111122223333:role/mock"
    }
  }

  mock_data "aws_caller_identity" {
    defaults = {
      account_id = "111122223333"
    }
  }

  mock_resource "aws_kms_key" {
    defaults = {
      arn = "arn:aws:kms:eu-central-1:111122223333:key/00000000-0000-0000-0000-000000000000"
    }
  }
}

variables {
  name                         = "fedheart-cleveland"
  vpc_cidr                     = "10.1.0.0/16"
  availability_zones           = ["eu-central-1a", "eu-central-1b"]
  kubernetes_version           = "1.33"
  service_ipv4_cidr            = "172.20.0.0/16"
  endpoint_public_access_cidrs = ["203.0.113.0/24"]
  admin_principal_arns         = ["arn:aws:iam::111122223333:role/cleveland-admin"]
  namespace                    = "fedheart"
  service_account              = "fedheart-supernode"
  region                       = "eu-central-1"
  experiment_prefix            = "fed-heart-disease"
  tracking_run_name            = "client-cleveland"
  partition                    = "aws"
}

run "eks_cluster_module" {
  command = apply

  module {
    source = "./modules/eks-cluster"
  }

  assert {
    condition     = aws_eks_cluster.this.compute_config[0].enabled && toset(aws_eks_cluster.this.compute_config[0].node_pools) == toset(["general-purpose", "system"])
    error_message = "EKS Auto Mode compute must be enabled with the built-in node pools."
  }

  assert {
    condition     = aws_eks_cluster.this.kubernetes_network_config[0].elastic_load_balancing[0].enabled
    error_message = "Auto Mode load balancing must be on (NLB for the SuperLink Service)."
  }

  assert {
    condition     = aws_eks_cluster.this.storage_config[0].block_storage[0].enabled
    error_message = "Auto Mode block storage must be on (PVCs for SuperLink state and hospital data)."
  }

  assert {
    condition     = aws_eks_cluster.this.bootstrap_self_managed_addons == false
    error_message = "Auto Mode clusters must not bootstrap self-managed add-ons."
  }

  assert {
    condition     = aws_eks_cluster.this.access_config[0].authentication_mode == "API"
    error_message = "Access entries (API) only, no aws-auth ConfigMap."
  }

  assert {
    condition     = toset(aws_eks_cluster.this.vpc_config[0].public_access_cidrs) == toset(["203.0.113.0/24"])
    error_message = "The API endpoint must be limited to endpoint_public_access_cidrs."
  }

  assert {
    condition     = toset(aws_eks_cluster.this.encryption_config[0].resources) == toset(["secrets"])
    error_message = "Kubernetes Secrets (TLS key, node key) must be envelope-encrypted."
  }

  assert {
    condition     = contains(jsondecode(aws_iam_role.cluster.assume_role_policy).Statement[0].Action, "sts:TagSession")
    error_message = "Auto Mode cluster role trust needs sts:TagSession."
  }

  assert {
    condition = toset(keys(aws_iam_role_policy_attachment.cluster)) == toset([
      "AmazonEKSClusterPolicy", "AmazonEKSComputePolicy", "AmazonEKSBlockStoragePolicy",
      "AmazonEKSLoadBalancingPolicy", "AmazonEKSNetworkingPolicy",
    ])
    error_message = "Auto Mode cluster role policies."
  }

  assert {
    condition     = toset(keys(aws_iam_role_policy_attachment.node)) == toset(["AmazonEKSWorkerNodeMinimalPolicy", "AmazonEC2ContainerRegistryPullOnly"])
    error_message = "Auto Mode node role: minimal worker policy and ECR pull only."
  }

  assert {
    condition     = length(aws_eks_access_policy_association.admin) == 1
    error_message = "One cluster-admin access policy per admin principal."
  }

  assert {
    condition     = [for s in aws_subnet.public : s.cidr_block] == ["10.1.0.0/18", "10.1.64.0/18"] && [for s in aws_subnet.private : s.cidr_block] == ["10.1.128.0/18", "10.1.192.0/18"]
    error_message = "Subnets are the four /18 blocks of the VPC."
  }

  assert {
    condition     = alltrue([for s in aws_subnet.public : s.tags["kubernetes.io/role/elb"] == "1"]) && alltrue([for s in aws_subnet.private : s.tags["kubernetes.io/role/internal-elb"] == "1"])
    error_message = "Subnets need the role tags EKS Auto Mode uses to place NLBs."
  }

  assert {
    condition     = aws_route.private_nat.destination_cidr_block == "0.0.0.0/0"
    error_message = "Private subnets need a default route through the NAT gateway."
  }

  assert {
    condition     = jsondecode(aws_iam_role.sagemaker.assume_role_policy).Statement[0].Action == "sts:AssumeRoleWithWebIdentity"
    error_message = "The SageMaker role is assumed with the pod's web identity token."
  }

  assert {
    condition = jsondecode(aws_iam_role.sagemaker.assume_role_policy).Statement[0].Condition.StringEquals == {
      "oidc.eks.eu-central-1.amazonaws.com/id/0123456789ABCDEF:sub" = "system:serviceaccount:fedheart:fedheart-supernode"
      "oidc.eks.eu-central-1.amazonaws.com/id/0123456789ABCDEF:aud" = "sts.amazonaws.com"
    }
    error_message = "Trust must be limited to the fedheart/fedheart-supernode ServiceAccount."
  }

  assert {
    condition     = aws_iam_role.sagemaker.name == "fedheart-cleveland-sagemaker"
    error_message = "Role name <cluster>-sagemaker is what k8s/overlays/*/params.yaml refer to."
  }

  assert {
    condition     = length(jsondecode(aws_iam_role_policy.sagemaker.policy).Statement) == 4
    error_message = "The workload role carries its party's SageMaker policy and nothing else."
  }

  # Only the party's own principals administer the cluster.
  assert {
    condition     = aws_eks_cluster.this.access_config[0].bootstrap_cluster_creator_admin_permissions == false
    error_message = "The cluster's creator must not become cluster-admin (bootstrap_cluster_creator_admin_permissions = false)."
  }

  assert {
    condition     = [for e in aws_eks_access_entry.admin : e.principal_arn] == ["arn:aws:iam::111122223333:role/cleveland-admin"] && alltrue([for a in aws_eks_access_policy_association.admin : endswith(a.policy_arn, "/AmazonEKSClusterAdminPolicy") && a.access_scope[0].type == "cluster"])
    error_message = "Exactly the party's admin principals get an access entry with cluster-admin."
  }

  # AWS APIs through VPC interface endpoints in the private subnets, HTTPS from the VPC only.
  assert {
    condition     = toset(keys(aws_vpc_endpoint.interface)) == toset(["sagemaker.api", "sagemaker.metrics", "sts"]) && alltrue([for e in aws_vpc_endpoint.interface : e.vpc_endpoint_type == "Interface" && e.private_dns_enabled && startswith(e.service_name, "com.amazonaws.eu-central-1.")])
    error_message = "Interface endpoints (private DNS) for the SageMaker API, SageMaker Metrics and STS."
  }

  assert {
    condition     = aws_vpc_security_group_ingress_rule.endpoints_https.cidr_ipv4 == "10.1.0.0/16" && aws_vpc_security_group_ingress_rule.endpoints_https.from_port == 443 && aws_vpc_security_group_ingress_rule.endpoints_https.to_port == 443
    error_message = "The endpoints admit HTTPS from the cluster's own VPC only."
  }

  # SageMaker: this party's trial components only.
  assert {
    condition = toset(jsondecode(aws_iam_role_policy.sagemaker.policy).Statement[0].Resource) == toset([
      "arn:aws:sagemaker:eu-central-1:111122223333:experiment-trial-component/fed-heart-disease-*-client-cleveland",
    ])
    error_message = "Trial-component actions must be limited to <prefix>-*-client-cleveland."
  }

  assert {
    condition     = !anytrue([for s in jsondecode(aws_iam_role_policy.sagemaker.policy).Statement : anytrue([for a in flatten([s.Action]) : contains(["sagemaker:UpdateExperiment", "sagemaker:UpdateTrial", "sagemaker:DeleteExperiment", "sagemaker:DeleteTrial", "sagemaker:DeleteTrialComponent", "sagemaker:DisassociateTrialComponent"], a) || strcontains(a, "*")])])
    error_message = "No update or delete of the shared experiment and trial, no deletes, no wildcard actions."
  }
}
