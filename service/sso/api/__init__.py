"""The gRPC (and small HTTP) edge of the service: the only package that imports grpc."""
