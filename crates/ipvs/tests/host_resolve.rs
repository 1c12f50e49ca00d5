//! On a kernel without IPVS (the development machine has no `ip_vs` and no
//! loadable modules), resolving the family fails with `IpvsUnavailable`.
//! This is the real request to the real generic-netlink controller.

use kipvs_ipvs::{Client, Error};

#[test]
fn resolution_without_ip_vs_is_ipvs_unavailable() {
    if std::path::Path::new("/proc/net/ip_vs").exists() {
        println!("skipped: this kernel has IPVS (/proc/net/ip_vs exists)");
        return;
    }
    match Client::new() {
        Err(Error::IpvsUnavailable) => {}
        Err(e) => panic!("expected IpvsUnavailable, got {e:?}"),
        // The controller loaded ip_vs on demand after all.
        Ok(_) if std::path::Path::new("/proc/net/ip_vs").exists() => {
            println!("skipped: the kernel loaded ip_vs on demand");
        }
        Ok(c) => panic!("resolved IPVS without ip_vs: {c:?}"),
    }
    let e = Client::new().unwrap_err();
    assert_eq!(
        e.to_string(),
        "the IPVS netlink family is not registered and ip_vs could not be loaded"
    );
}
