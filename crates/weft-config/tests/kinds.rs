//! One document per kind: it loads without errors, survives parse →
//! serialize → parse unchanged, and `weft get` shapes it as Kubernetes does.
//! A kind added to `Kind::ALL` without a sample here fails the test.

use weft_config::{load_str, Kind};

const SAMPLES: &[&str] = &[
    "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: a}\nspec:\n  hosts: [reviews]\n  http:\n  - match: [{uri: {prefix: /api}, headers: {end-user: {exact: jason}}}]\n    route: [{destination: {host: reviews, subset: v2}}]\n  tcp:\n  - route: [{destination: {host: db, port: {number: 3306}}}]\n",
    "apiVersion: networking.istio.io/v1beta1\nkind: DestinationRule\nmetadata: {name: a}\nspec:\n  host: reviews\n  trafficPolicy: {loadBalancer: {simple: RANDOM}}\n  subsets: [{name: v1, labels: {version: v1}}]\n",
    "apiVersion: networking.istio.io/v1alpha3\nkind: Gateway\nmetadata: {name: a}\nspec:\n  selector: {istio: ingressgateway}\n  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*']}]\n",
    "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: a}\nspec:\n  hosts: [api.example.com]\n  ports: [{number: 443, name: https, protocol: TLS}]\n  resolution: DNS\n  location: MESH_EXTERNAL\n",
    "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: a}\nspec:\n  egress: [{hosts: ['./*', istio-system/*]}]\n  outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n",
    "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: a}\nspec:\n  address: 198.18.0.7\n  labels: {app: vm}\n  serviceAccount: vm\n",
    "apiVersion: networking.istio.io/v1\nkind: WorkloadGroup\nmetadata: {name: a}\nspec:\n  template: {serviceAccount: vm, labels: {app: vm}}\n  probe: {httpGet: {path: /ready, port: 8080}}\n",
    "apiVersion: networking.istio.io/v1alpha3\nkind: EnvoyFilter\nmetadata: {name: a}\nspec:\n  configPatches: [{applyTo: CLUSTER, patch: {operation: ADD, value: {name: extra}}}]\n",
    "apiVersion: networking.istio.io/v1beta1\nkind: ProxyConfig\nmetadata: {name: a}\nspec:\n  concurrency: 2\n",
    "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: a}\nspec:\n  mtls: {mode: STRICT}\n",
    "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {name: a}\nspec:\n  jwtRules: [{issuer: https://issuer.example, jwksUri: https://issuer.example/jwks}]\n",
    "apiVersion: security.istio.io/v1beta1\nkind: AuthorizationPolicy\nmetadata: {name: a}\nspec:\n  action: DENY\n  rules: [{to: [{operation: {methods: [POST]}}]}]\n",
    "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: a}\nspec:\n  tracing: [{randomSamplingPercentage: 10.0}]\n",
    "apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata: {name: a}\nspec:\n  url: oci://registry.example/plugin:1\n  phase: AUTHN\n",
    "apiVersion: extensions.istio.io/v1alpha1\nkind: TrafficExtension\nmetadata: {name: a}\nspec:\n  selector: {matchLabels: {app: reviews}}\n  phase: AUTHN\n  lua: {inlineCode: 'function envoy_on_request(h) end'}\n",
    "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: a}\nspec:\n  controllerName: istio.io/gateway-controller\n",
    "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: a}\nspec:\n  gatewayClassName: istio\n  listeners:\n  - {name: http, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}\n  - {name: https, port: 443, protocol: HTTPS, tls: {mode: Terminate, certificateRefs: [{name: cert}]}}\n",
    "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: a}\nspec:\n  parentRefs: [{name: a}]\n  rules:\n  - filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: x-team, value: books}]}}]\n    backendRefs: [{name: reviews, port: 9080, weight: 90}]\n",
    "apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata: {name: a}\nspec:\n  parentRefs: [{name: a}]\n  rules: [{matches: [{method: {service: helloworld.Greeter}}], backendRefs: [{name: greeter, port: 50051}]}]\n",
    "apiVersion: gateway.networking.k8s.io/v1alpha2\nkind: TCPRoute\nmetadata: {name: a}\nspec:\n  parentRefs: [{name: a}]\n  rules: [{backendRefs: [{name: db, port: 3306}]}]\n",
    "apiVersion: gateway.networking.k8s.io/v1alpha2\nkind: TLSRoute\nmetadata: {name: a}\nspec:\n  hostnames: [api.example.com]\n  rules: [{backendRefs: [{name: api, port: 443}]}]\n",
    "apiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {name: a}\nspec:\n  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: web}]\n  to: [{group: '', kind: Service}]\n",
    "apiVersion: v1\nkind: Namespace\nmetadata: {name: a, labels: {istio-injection: enabled}}\n",
    "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec:\n  ports: [{name: http, port: 9080, targetPort: 9080}]\n  selector: {app: a}\n",
    "apiVersion: v1\nkind: Pod\nmetadata: {name: a, labels: {app: a}}\nspec:\n  containers: [{name: a, image: a:1, ports: [{containerPort: 9080}]}]\n",
    "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: a}\nspec:\n  selector: {matchLabels: {app: a}}\n  template:\n    metadata: {labels: {app: a}}\n    spec: {containers: [{name: a, image: a:1}]}\n",
    "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: a}\n",
    "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: a}\naddressType: IPv4\nendpoints: [{addresses: [198.18.0.9]}]\nports: [{name: http, port: 9080}]\n",
    "apiVersion: v1\nkind: Secret\nmetadata: {name: a}\ntype: kubernetes.io/tls\ndata: {tls.crt: Y2VydA==, tls.key: a2V5}\n",
    "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata: {mesh: 'x'}\n",
    "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: a}\nspec:\n  ingressClassName: istio\n  rules:\n  - host: httpbin.example.com\n    http:\n      paths:\n      - {path: /, pathType: Prefix, backend: {service: {name: httpbin, port: {number: 8000}}}}\n  tls:\n  - {hosts: [httpbin.example.com], secretName: httpbin-credential}\n",
    "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: istio}\nspec:\n  controller: istio.io/ingress-controller\n",
];

#[test]
fn every_kind_loads_and_round_trips() {
    let mut seen = Vec::new();
    for sample in SAMPLES {
        let loaded = load_str(sample, "sample.yaml");
        assert!(!loaded.has_errors(), "{sample}\n{:?}", loaded.problems);
        let r = &loaded.resources[0];
        seen.push(r.kind);
        assert_eq!(
            r.namespace(),
            "default",
            "a resource without a namespace lands in default"
        );
        let doc = r.to_document();
        assert_eq!(doc["kind"], r.kind.name());
        assert_eq!(doc["metadata"]["namespace"], "default");
        let again = load_str(&serde_json::to_string(&doc).unwrap(), "round-trip");
        assert!(!again.has_errors(), "{doc}\n{:?}", again.problems);
        assert_eq!(
            again.resources[0].spec, r.spec,
            "{} changed in a round trip: {doc}",
            r.kind
        );
        assert_eq!(again.resources[0].key(), r.key());
    }
    for kind in Kind::ALL {
        assert!(
            seen.contains(&kind),
            "no sample for {kind}: add one to SAMPLES"
        );
    }
}

#[test]
fn unknown_fields_are_rejected_for_istio_and_gateway_api_kinds() {
    for sample in SAMPLES.iter().filter(|s| {
        !s.starts_with("apiVersion: v1\n")
            && !s.contains("apps/v1")
            && !s.contains("discovery.k8s.io")
    }) {
        let typo = sample.replacen("spec:\n", "spec:\n  hostz: [oops]\n", 1);
        let loaded = load_str(&typo, "typo.yaml");
        let e = loaded
            .errors()
            .next()
            .unwrap_or_else(|| panic!("unknown field accepted:\n{typo}"));
        assert!(e.message.contains("hostz"), "{e}");
        assert_eq!(e.origin.line, 5, "{e}");
    }
}
