"""An OTLP trace receiver for the tracing test: it decodes each
ExportTraceServiceRequest with OpenTelemetry's own generated messages and
gRPC service (the opentelemetry-proto package, on grpcio), keeps the
spans with the transport they came by, and serves them back as JSON on
GET /spans. Listens on 0.0.0.0:4318 (OTLP/HTTP) and 0.0.0.0:4317
(OTLP/gRPC), OpenTelemetry's ports."""

import json
import sys
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

SPANS = []
LOCK = threading.Lock()


def attributes(kvs):
    return {kv.key: kv.value.string_value for kv in kvs}


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        if self.path != "/v1/traces" or self.headers.get("content-type") != "application/x-protobuf":
            self.send_response(415)
            self.end_headers()
            return
        req = trace_service_pb2.ExportTraceServiceRequest()
        req.ParseFromString(body)
        keep(req, "http")
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.end_headers()
        self.wfile.write(trace_service_pb2.ExportTraceServiceResponse().SerializeToString())

    def do_GET(self):
        with LOCK:
            body = json.dumps(SPANS).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def Export(self, request, context):
        keep(request, "grpc")
        return trace_service_pb2.ExportTraceServiceResponse()


def keep(req, transport):
    got = []
    for rs in req.resource_spans:
        service = attributes(rs.resource.attributes).get("service.name", "")
        for ss in rs.scope_spans:
            for s in ss.spans:
                got.append({
                    "transport": transport,
                    "service": service,
                    "trace": s.trace_id.hex(),
                    "id": s.span_id.hex(),
                    "parent": s.parent_span_id.hex(),
                    "name": s.name,
                    "kind": s.kind,
                    "start": s.start_time_unix_nano,
                    "end": s.end_time_unix_nano,
                    "attributes": attributes(s.attributes),
                })
    with LOCK:
        SPANS.extend(got)
    print(f"received {len(got)} spans over {transport}", flush=True)


if __name__ == "__main__":
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(TraceService(), server)
    server.add_insecure_port("0.0.0.0:4317")
    server.start()
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 4318
    ThreadingHTTPServer(("0.0.0.0", port), Handler).serve_forever()
