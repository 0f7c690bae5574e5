# Private registries for the images built from docker/*.Dockerfile and for fleet-proxy
# (nginxinc/nginx-unprivileged, mirrored: docs/deploy-eks.md, step 2).
# Tags are immutable: a pushed tag always names the same image.

locals {
  images = toset(["superlink", "supernode", "superexec", "fleet-proxy"])
}

resource "aws_ecr_repository" "image" {
  for_each = local.images

  name                 = "${var.name_prefix}/${each.key}"
  image_tag_mutability = "IMMUTABLE"
  force_delete         = var.ecr_force_delete

  image_scanning_configuration {
    scan_on_push = true
  }

  encryption_configuration {
    encryption_type = "AES256"
  }
}

resource "aws_ecr_lifecycle_policy" "image" {
  for_each = aws_ecr_repository.image

  repository = each.value.name
  policy = jsonencode({
    rules = [{
      rulePriority = 1
      description  = "Keep the 20 most recent images"
      selection = {
        tagStatus   = "any"
        countType   = "imageCountMoreThan"
        countNumber = 20
      }
      action = { type = "expire" }
    }]
  })
}

# Production layout: the hospitals' nodes (their own accounts) may pull the supernode image, and
# nothing else, from the aggregator's registry. (A hospital may instead push its own reviewed build
# to a registry of its own and set IMAGE_REGISTRY in its overlay.)
resource "aws_ecr_repository_policy" "supernode_pull" {
  count = length(var.party_accounts) > 0 ? 1 : 0

  repository = aws_ecr_repository.image["supernode"].name
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Sid       = "HospitalAccountsPull"
      Effect    = "Allow"
      Principal = { AWS = [for k in var.client_clusters : "arn:${local.partition}:iam::${var.party_accounts[k].account_id}:root"] }
      Action    = ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]
    }]
  })
}
