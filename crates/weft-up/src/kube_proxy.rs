//! What kube-proxy does for a pod with no sidecar: a connection to a
//! service's cluster IP and port goes to one of its endpoints, picked at
//! random (iptables `statistic` rules, as kube-proxy's iptables mode writes
//! them), and a service with no endpoints refuses at once. A sidecar's pod
//! needs none of it: its proxy routes by the original destination.

use weft_registry::Registry;

pub fn rules(registry: &Registry) -> String {
    let mut nat = String::from(
        "*nat\n:OUTPUT ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n-A OUTPUT -p tcp -j KUBE-SERVICES\n",
    );
    let mut filter = String::from("*filter\n:OUTPUT ACCEPT [0:0]\n");
    for service in &registry.services {
        let Some(vip) = service.vip else { continue };
        for port in &service.ports {
            let to = format!("-d {vip}/32 -p tcp --dport {}", port.port);
            let endpoints = registry.endpoints(service, port, &Default::default());
            if endpoints.is_empty() {
                filter.push_str(&format!(
                    "-A OUTPUT {to} -j REJECT --reject-with tcp-reset\n"
                ));
                continue;
            }
            let n = endpoints.len();
            for (i, (addr, _)) in endpoints.iter().enumerate() {
                // Rule i takes 1/(n-i) of what the rules before it left:
                // an even share each.
                let pick = match n - i {
                    1 => String::new(),
                    left => format!(
                        " -m statistic --mode random --probability {:.5}",
                        1.0 / left as f64
                    ),
                };
                nat.push_str(&format!(
                    "-A KUBE-SERVICES {to}{pick} -j DNAT --to-destination {addr}\n"
                ));
            }
        }
    }
    format!("{nat}COMMIT\n{filter}COMMIT\n")
}

#[cfg(test)]
mod tests {
    use weft_registry::MeshSpec;

    use crate::plan::Plan;

    #[test]
    fn each_service_port_spreads_over_its_endpoints() {
        let spec = MeshSpec::from_yaml(
            "workloads:\n- {name: a-0, labels: {app: a}, command: [x], ports: [{containerPort: 8080}]}\n- {name: a-1, labels: {app: a}, command: [x], ports: [{containerPort: 8080}]}\nservices:\n- {name: a, ports: [{port: 80, targetPort: 8080}], selector: {app: a}}\n- {name: empty, ports: [{port: 81}], selector: {app: none}}\n",
        )
        .unwrap();
        let plan = Plan::new("t", 9, 18080, &spec).unwrap();
        let r = super::rules(&plan.registry);
        assert!(r.contains("-A KUBE-SERVICES -d 198.19.9.10/32 -p tcp --dport 80 -m statistic --mode random --probability 0.50000 -j DNAT --to-destination 198.18.9.10:8080\n"), "{r}");
        assert!(r.contains("-A KUBE-SERVICES -d 198.19.9.10/32 -p tcp --dport 80 -j DNAT --to-destination 198.18.9.11:8080\n"), "{r}");
        assert!(
            r.contains(
                "-A OUTPUT -d 198.19.9.11/32 -p tcp --dport 81 -j REJECT --reject-with tcp-reset\n"
            ),
            "{r}"
        );
    }
}
