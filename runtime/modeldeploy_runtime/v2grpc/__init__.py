"""Generated stubs of the v2 gRPC API (grpc_service.proto; hack/gen-grpc.sh makes them).

They register the messages as ``inference.*`` in protobuf's default pool, as tritonclient's own
stubs do: import one or the other in a process, not both.
"""
