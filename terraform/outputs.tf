output "region" {
  value = var.region
}

output "cluster_names" {
  description = "Cluster key (server or hospital) -> EKS cluster name."
  value       = { for k, m in module.cluster : k => m.cluster_name }
}

output "kubeconfig_commands" {
  description = "Adds each cluster to ~/.kube/config with the cluster name as context name."
  value = {
    for k, m in module.cluster : k =>
    "aws eks update-kubeconfig --region ${var.region} --name ${m.cluster_name} --alias ${m.cluster_name}"
  }
}

output "vpc_cidrs" {
  value = local.vpc_cidrs
}

output "sagemaker_role_arns" {
  description = "Role for the eks.amazonaws.com/role-arn annotation (SAGEMAKER_ROLE_ARN in each overlay's params.yaml)."
  value       = { for k, m in module.cluster : k => m.sagemaker_role_arn }
}

output "ecr_registry" {
  description = "IMAGE_REGISTRY in each overlay's params.yaml."
  value       = "${local.account_id}.dkr.ecr.${var.region}.amazonaws.com"
}

output "ecr_repository_urls" {
  value = { for k, r in aws_ecr_repository.image : k => r.repository_url }
}

output "superlink_exposure" {
  value = var.superlink_exposure
}

output "server_overlay" {
  description = "The k8s overlay to apply on the server cluster for this exposure."
  value       = var.superlink_exposure == "peering" ? "k8s/overlays/server-peering" : "k8s/overlays/server"
}

output "superlink_address_command" {
  description = <<-EOT
    The NLB is created by EKS Auto Mode when the server overlay is applied, so its
    DNS name is only known afterwards; this prints the SuperLink address
    (SUPERLINK_ADDRESS in the client overlays' params.yaml).
  EOT
  value = format(
    "echo \"$(kubectl --context %s -n %s get service superlink -o jsonpath='{.status.loadBalancer.ingress[0].hostname}'):%d\"",
    module.cluster["server"].cluster_name, var.k8s_namespace, var.superlink_port,
  )
}

output "superlink_port" {
  value = var.superlink_port
}

output "peering_connection_ids" {
  description = "Client -> VPC peering connection (empty unless superlink_exposure = \"peering\")."
  value       = { for k, p in aws_vpc_peering_connection.client_to_server : k => p.id }
}

output "client_egress_ips" {
  description = "Public source IP of each hospital cluster (NAT gateway): candidates for the SuperLink Service's loadBalancerSourceRanges."
  value       = { for k, m in module.cluster : k => m.nat_public_ip if k != "server" }
}
