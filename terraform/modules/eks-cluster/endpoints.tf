# VPC interface endpoints for the AWS APIs a workload uses: the SageMaker API (experiments,
# trials, trial components), SageMaker Metrics (BatchPutMetrics) and STS (IRSA's
# AssumeRoleWithWebIdentity). With private DNS their usual host names resolve to addresses in this
# VPC's private subnets, so the pods' NetworkPolicies admit HTTPS to the VPC only, never the internet.

resource "aws_security_group" "endpoints" {
  name        = "${var.name}-aws-endpoints"
  description = "HTTPS from ${var.name}'s VPC to its AWS interface endpoints"
  vpc_id      = aws_vpc.this.id
  tags        = merge(var.tags, { Name = "${var.name}-aws-endpoints" })
}

resource "aws_vpc_security_group_ingress_rule" "endpoints_https" {
  security_group_id = aws_security_group.endpoints.id
  description       = "HTTPS from the VPC"
  cidr_ipv4         = var.vpc_cidr
  from_port         = 443
  to_port           = 443
  ip_protocol       = "tcp"
}

resource "aws_vpc_endpoint" "interface" {
  for_each = toset(var.interface_endpoint_services)

  vpc_id              = aws_vpc.this.id
  service_name        = "com.amazonaws.${var.region}.${each.value}"
  vpc_endpoint_type   = "Interface"
  private_dns_enabled = true
  subnet_ids          = aws_subnet.private[*].id
  security_group_ids  = [aws_security_group.endpoints.id]

  tags = merge(var.tags, { Name = "${var.name}-${each.value}" })
}
