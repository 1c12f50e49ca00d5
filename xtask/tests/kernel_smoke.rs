//! The lab's smoke test: inside the VM the kernel really has IPVS and dummy
//! links. Everything is read back with the stock tools (ipvsadm, iproute2).
//! Run with `cargo xtask vm test`; ignored on the host, whose kernel has
//! neither.

use std::process::Command;

fn sh(cmd: &str) -> String {
    let out = Command::new("bash")
        .args(["-c", cmd])
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "`{cmd}` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

#[test]
#[ignore = "needs the kernel lab"]
fn dummy_link_and_ipvs_service_read_back_exactly() {
    sh("ipvsadm -C && ip link del smoke0 2>/dev/null || true");
    sh("ip link add smoke0 type dummy && ip addr add 10.96.7.1/32 dev smoke0");
    let link = sh("ip -d -o link show smoke0");
    assert!(link.contains("smoke0: <BROADCAST,NOARP>"), "{link}");
    assert!(link.contains(" dummy "), "{link}");
    assert_eq!(
        sh("ip -o -4 addr show dev smoke0 | awk '{print $4}'"),
        "10.96.7.1/32\n"
    );

    sh("ipvsadm -A -t 10.96.7.1:80 -s rr && ipvsadm -a -t 10.96.7.1:80 -r 10.244.0.5:8080 -m -w 3");
    assert_eq!(
        sh("ipvsadm -S -n"),
        "-A -t 10.96.7.1:80 -s rr\n-a -t 10.96.7.1:80 -r 10.244.0.5:8080 -m -w 3\n"
    );
    let proc_table = sh("cat /proc/net/ip_vs");
    assert!(proc_table.contains("TCP  0A600701:0050 rr"), "{proc_table}");

    sh("ipvsadm -C && ip link del smoke0");
    assert_eq!(sh("ipvsadm -S -n"), "");
}
