output "region" {
  value = var.region
}

output "cluster_names" {
  description = "Cluster key (server or hospital) -> EKS cluster name."
  value       = { for k, m in local.cluster : k => m.cluster_name }
}

output "kubeconfig_commands" {
  description = "Adds each cluster to ~/.kube/config with the cluster name as context name."
  value = {
    for k, m in local.cluster : k =>
    "aws eks update-kubeconfig --region ${var.region} --name ${m.cluster_name} --alias ${m.cluster_name}"
  }
}

output "vpc_cidrs" {
  value = local.vpc_cidrs
}

output "sagemaker_role_arns" {
  description = "Role for the eks.amazonaws.com/role-arn annotation (SAGEMAKER_ROLE_ARN in each overlay's params.yaml)."
  value       = { for k, m in local.cluster : k => m.sagemaker_role_arn }
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
    local.cluster["server"].cluster_name, var.k8s_namespace, var.superlink_port,
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
  description = "Public source IP of each hospital cluster (its NAT gateway)."
  value       = { for k, m in local.cluster : k => m.nat_public_ip if k != "server" }
}

output "fleet_source_ranges" {
  description = "loadBalancerSourceRanges of the SuperLink's public port: the hospitals' NAT addresses (internet-nlb) or VPCs (peering), plus superlink_extra_source_cidrs. Never 0.0.0.0/0."
  value       = local.fleet_source_ranges
}

output "nlb_health_check_cidrs" {
  description = "Server subnets the NLB's nodes (and their health checks) use: admitted to the proxy port by its NetworkPolicy beside fleet_source_ranges."
  value       = local.nlb_subnet_cidrs
}

output "fleet_source_ranges_yaml" {
  description = "The server overlay's source-ranges.yaml (k8s/overlays/<server_overlay>/source-ranges.yaml)."
  value       = local.fleet_source_ranges_yaml
}

output "superlink_egress_cidrs" {
  description = "The only addresses a hospital pod may dial the SuperLink at (its NetworkPolicy): the NLB's Elastic IPs (internet-nlb) or the server's private subnets (peering)."
  value       = local.superlink_egress_cidrs
}

output "superlink_addresses_yaml" {
  description = "Every hospital overlay's superlink-addresses.yaml (k8s/overlays/client-<hospital>/superlink-addresses.yaml)."
  value       = local.superlink_addresses_yaml
}

output "superlink_eip_allocations" {
  description = "SUPERLINK_EIP_ALLOCATIONS in k8s/overlays/server/params.yaml: the NLB's fixed addresses (internet-nlb only)."
  value       = join(",", aws_eip.superlink[*].allocation_id)
}

output "party_accounts" {
  description = "Party -> AWS account its cluster lives in (one per party in the production layout)."
  value       = { for k, m in local.cluster : k => m.account_id }
}

output "cluster_admin_principals" {
  description = "Party -> the principals with cluster-admin on its cluster (its own only)."
  value       = { for k, m in local.cluster : k => m.admin_principal_arns }
}

output "sagemaker_policies" {
  description = "Party -> its workload role's SageMaker policy (its own records only)."
  value       = { for k, m in local.cluster : k => m.sagemaker_policy_json }
}
