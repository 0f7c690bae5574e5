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
