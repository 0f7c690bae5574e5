output "cluster_name" {
  value = aws_eks_cluster.this.name
}

output "cluster_arn" {
  value = aws_eks_cluster.this.arn
}

output "cluster_endpoint" {
  value = aws_eks_cluster.this.endpoint
}

output "vpc_id" {
  value = aws_vpc.this.id
}

output "vpc_cidr" {
  value = aws_vpc.this.cidr_block
}

output "private_route_table_id" {
  value = aws_route_table.private.id
}

output "private_subnet_ids" {
  value = aws_subnet.private[*].id
}

output "public_subnet_ids" {
  value = aws_subnet.public[*].id
}

output "node_role_arn" {
  value = aws_iam_role.node.arn
}

output "sagemaker_role_name" {
  value = aws_iam_role.sagemaker.name
}

output "sagemaker_role_arn" {
  value = aws_iam_role.sagemaker.arn
}

output "workload_subject" {
  description = "The Kubernetes ServiceAccount allowed to assume the SageMaker role."
  value       = local.workload_sub
}

output "nat_public_ip" {
  description = "Source address of the cluster's outbound traffic (e.g. SuperNodes dialling an internet-facing SuperLink)."
  value       = aws_eip.nat.public_ip
}

output "sagemaker_policy_json" {
  description = "The workload role's SageMaker Experiments policy (this party's records only)."
  value       = aws_iam_role_policy.sagemaker.policy
}

output "interface_endpoint_services" {
  description = "Service name -> VPC interface endpoint id."
  value       = { for k, e in aws_vpc_endpoint.interface : k => e.id }
}

output "admin_principal_arns" {
  description = "The principals with an access entry (cluster-admin) on this cluster."
  value       = sort([for e in aws_eks_access_entry.admin : e.principal_arn])
}

output "account_id" {
  description = "AWS account the cluster lives in."
  value       = data.aws_caller_identity.current.account_id
}

output "public_subnet_cidrs" {
  value = local.public_subnet_cidrs
}

output "private_subnet_cidrs" {
  value = local.private_subnet_cidrs
}

output "creator_is_admin" {
  description = "Whether whoever created the cluster got cluster-admin from that (always false)."
  value       = aws_eks_cluster.this.access_config[0].bootstrap_cluster_creator_admin_permissions
}
