//! Prints the replace script of a small table (for trying it with `nft -c -f -`).
use kipvs_nft::*;
fn main() {
    let vs = Vs::new("10.96.0.10".parse().unwrap(), Proto::Tcp, 80);
    let els = [
        Element::VipAddress(vs.addr),
        Element::VipPort(vs),
        Element::ClusterPort(vs),
        Element::LbAllowed(vs, "10.1.0.0/16".parse().unwrap()),
        Element::LbRestricted(vs),
        Element::HealthCheckPort(30000),
    ]
    .into();
    let sk = Skeleton {
        local: LocalTraffic::ClusterCidrs(vec!["10.244.0.0/16".parse().unwrap()]),
        ..Skeleton::default()
    };
    print!("{}", replace_script(&sk, &els));
}
