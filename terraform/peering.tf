# superlink_exposure = "peering": every client VPC is peered with the server VPC
# and routes the server CIDR through the peering (and back). The SuperLink is
# then published on an internal NLB (k8s/overlays/server-peering), whose DNS
# name resolves to private addresses reachable over the peering.

locals {
  peered_clients = var.superlink_exposure == "peering" ? toset(var.client_clusters) : toset([])
}

resource "aws_vpc_peering_connection" "client_to_server" {
  for_each = local.peered_clients

  vpc_id      = local.cluster[each.key].vpc_id
  peer_vpc_id = local.cluster["server"].vpc_id
  auto_accept = true # same account and region (party_accounts requires internet-nlb)

  accepter {
    allow_remote_vpc_dns_resolution = true
  }

  requester {
    allow_remote_vpc_dns_resolution = true
  }

  tags = { Name = "${var.name_prefix}-${each.key}-to-server" }
}

resource "aws_route" "client_to_server" {
  for_each = local.peered_clients

  route_table_id            = local.cluster[each.key].private_route_table_id
  destination_cidr_block    = local.vpc_cidrs["server"]
  vpc_peering_connection_id = aws_vpc_peering_connection.client_to_server[each.key].id
}

resource "aws_route" "server_to_client" {
  for_each = local.peered_clients

  route_table_id            = local.cluster["server"].private_route_table_id
  destination_cidr_block    = local.vpc_cidrs[each.key]
  vpc_peering_connection_id = aws_vpc_peering_connection.client_to_server[each.key].id
}
