"""gRPC routes and answers: methods from a descriptor set or config, gRPC statuses for denials, deadlines,
message framing limits, and forwarding over HTTP/2 with trailers preserved."""
