# The documented production layout: one AWS account per party. One mocked provider per party
# (versions.tf), each reporting its own account, so where each resource goes can be checked.
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
mock_provider "aws" {
  alias = "cleveland"

  mock_data "aws_caller_identity" {
    defaults = {
      account_id = "222233334444"
    }
  }

  mock_resource "aws_iam_role" {
    defaults = {
      arn = "arn:aws:iam::222233334444:role/mock"
    }
  }

  mock_resource "aws_kms_key" {
    defaults = {
      arn = "arn:aws:kms:eu-central-1:222233334444:key/00000000-0000-0000-0000-000000000000"
    }
  }

  mock_resource "aws_eks_cluster" {
    defaults = {
      arn = "arn:aws:eks:eu-central-1:222233334444:cluster/mock"
      identity = [{
        oidc = [{ issuer = "https://oidc.eks.eu-central-1.amazonaws.com/id/222233334444" }]
      }]
    }
  }

  mock_resource "aws_iam_openid_connect_provider" {
    defaults = {
      arn = "arn:aws:iam::222233334444:oidc-provider/oidc.eks.eu-central-1.amazonaws.com/id/222233334444"
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
      public_ip     = "198.51.100.11"
      allocation_id = "eipalloc-0cleveland"
    }
  }
}
mock_provider "aws" {
  alias = "hungarian"

  mock_data "aws_caller_identity" {
    defaults = {
      account_id = "333344445555"
    }
  }

  mock_resource "aws_iam_role" {
    defaults = {
      arn = "arn:aws:iam::333344445555:role/mock"
    }
  }

  mock_resource "aws_kms_key" {
    defaults = {
      arn = "arn:aws:kms:eu-central-1:333344445555:key/00000000-0000-0000-0000-000000000000"
    }
  }

  mock_resource "aws_eks_cluster" {
    defaults = {
      arn = "arn:aws:eks:eu-central-1:333344445555:cluster/mock"
      identity = [{
        oidc = [{ issuer = "https://oidc.eks.eu-central-1.amazonaws.com/id/333344445555" }]
      }]
    }
  }

  mock_resource "aws_iam_openid_connect_provider" {
    defaults = {
      arn = "arn:aws:iam::333344445555:oidc-provider/oidc.eks.eu-central-1.amazonaws.com/id/333344445555"
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
      public_ip     = "198.51.100.12"
      allocation_id = "eipalloc-0hungarian"
    }
  }
}
mock_provider "aws" {
  alias = "switzerland"

  mock_data "aws_caller_identity" {
    defaults = {
      account_id = "444455556666"
    }
  }

  mock_resource "aws_iam_role" {
    defaults = {
      arn = "arn:aws:iam::444455556666:role/mock"
    }
  }

  mock_resource "aws_kms_key" {
    defaults = {
      arn = "arn:aws:kms:eu-central-1:444455556666:key/00000000-0000-0000-0000-000000000000"
    }
  }

  mock_resource "aws_eks_cluster" {
    defaults = {
      arn = "arn:aws:eks:eu-central-1:444455556666:cluster/mock"
      identity = [{
        oidc = [{ issuer = "https://oidc.eks.eu-central-1.amazonaws.com/id/444455556666" }]
      }]
    }
  }

  mock_resource "aws_iam_openid_connect_provider" {
    defaults = {
      arn = "arn:aws:iam::444455556666:oidc-provider/oidc.eks.eu-central-1.amazonaws.com/id/444455556666"
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
      public_ip     = "198.51.100.13"
      allocation_id = "eipalloc-0switzerland"
    }
  }
}
mock_provider "aws" {
  alias = "va"

  mock_data "aws_caller_identity" {
    defaults = {
      account_id = "555566667777"
    }
  }

  mock_resource "aws_iam_role" {
    defaults = {
      arn = "arn:aws:iam::555566667777:role/mock"
    }
  }

  mock_resource "aws_kms_key" {
    defaults = {
      arn = "arn:aws:kms:eu-central-1:555566667777:key/00000000-0000-0000-0000-000000000000"
    }
  }

  mock_resource "aws_eks_cluster" {
    defaults = {
      arn = "arn:aws:eks:eu-central-1:555566667777:cluster/mock"
      identity = [{
        oidc = [{ issuer = "https://oidc.eks.eu-central-1.amazonaws.com/id/555566667777" }]
      }]
    }
  }

  mock_resource "aws_iam_openid_connect_provider" {
    defaults = {
      arn = "arn:aws:iam::555566667777:oidc-provider/oidc.eks.eu-central-1.amazonaws.com/id/555566667777"
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
      public_ip     = "198.51.100.14"
      allocation_id = "eipalloc-0va"
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

# The documented production layout: one AWS account per party, each reached by assuming a role in it.
run "one_account_per_party" {
  command = plan

  variables {
    client_clusters = ["cleveland", "hungarian", "switzerland", "va"]
    party_accounts = {
      server      = { account_id = "111122223333", role_arn = "arn:aws:iam::111122223333:role/fedheart-terraform" }
      cleveland   = { account_id = "222233334444", role_arn = "arn:aws:iam::222233334444:role/fedheart-terraform" }
      hungarian   = { account_id = "333344445555", role_arn = "arn:aws:iam::333344445555:role/fedheart-terraform" }
      switzerland = { account_id = "444455556666", role_arn = "arn:aws:iam::444455556666:role/fedheart-terraform" }
      va          = { account_id = "555566667777", role_arn = "arn:aws:iam::555566667777:role/fedheart-terraform" }
    }
    cluster_admins = {
      server      = ["arn:aws:iam::111122223333:role/aggregator-admin"]
      cleveland   = ["arn:aws:iam::222233334444:role/cleveland-admin"]
      hungarian   = ["arn:aws:iam::333344445555:role/hungarian-admin"]
      switzerland = ["arn:aws:iam::444455556666:role/switzerland-admin"]
      va          = ["arn:aws:iam::555566667777:role/va-admin"]
    }
  }

  assert {
    condition     = local.assume_roles == { for k, a in var.party_accounts : k => [a.role_arn] } && local.allowed_accounts == { for k, a in var.party_accounts : k => [a.account_id] }
    error_message = "Every party's provider assumes that party's role and accepts only its account."
  }

  assert {
    condition     = output.party_accounts == { for k, a in var.party_accounts : k => a.account_id }
    error_message = "Each party's cluster is created in its own account: ${jsonencode(output.party_accounts)}"
  }

  assert {
    condition     = length(distinct(values(output.party_accounts))) == 5
    error_message = "Five parties, five accounts."
  }

  assert {
    condition = alltrue([for k, policy in output.sagemaker_policies : alltrue([for s in jsondecode(policy).Statement : alltrue([
      for r in flatten([s.Resource]) : r == "*" || startswith(r, "arn:aws:sagemaker:eu-central-1:${var.party_accounts[k].account_id}:")
    ])])])
    error_message = "Each party's SageMaker records live in, and are only reachable in, its own account."
  }

  assert {
    condition     = alltrue([for k, admins in output.cluster_admin_principals : alltrue([for a in admins : split(":", a)[4] == var.party_accounts[k].account_id])])
    error_message = "Each cluster's admins belong to its own party's account."
  }

  assert {
    condition     = toset(jsondecode(aws_ecr_repository_policy.supernode_pull[0].policy).Statement[0].Principal.AWS) == toset([for k in var.client_clusters : "arn:aws:iam::${var.party_accounts[k].account_id}:root"]) && !strcontains(aws_ecr_repository_policy.supernode_pull[0].policy, "Push")
    error_message = "The hospitals' accounts may pull the supernode image, nothing more."
  }
}
