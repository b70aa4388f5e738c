// SPDX-License-Identifier: Apache-2.0

//! Carve the seed's cluster pool for three nodes and hand out pod IPs on each.
//!
//! `cargo run -p cilium-examples --example ipam`

use cilium_ipam::{ClusterPool, ClusterPoolConfig, Family, IpamError, NodeAllocator, Owner};

fn main() -> Result<(), IpamError> {
    // Operator side: cluster-pool-ipv4-cidr=172.20.0.0/16, cluster-pool-ipv4-mask-size=24.
    let mut pool = ClusterPool::new(&ClusterPoolConfig::ipv4("172.20.0.0/16", 24)?)?;
    for node in ["k8s-ctr", "k8s-w1", "k8s-w2"] {
        let cidrs = pool.allocate(node)?;
        // Agent side: each node hands out the IPs of its own CIDR.
        let mut ipam = NodeAllocator::new(&cidrs.to_vec())?;
        ipam.allocate_next(Family::V4, Owner::new(Owner::ROUTER)?)?;
        ipam.allocate_next(Family::V4, Owner::new(Owner::HEALTH)?)?;
        for pod in 0..3 {
            ipam.allocate_next(
                Family::V4,
                Owner::pod("default", &format!("pod-{node}-{pod}")),
            )?;
        }
        println!("{node}: podCIDRs {:?}", cidrs.to_vec());
        println!(
            "  IPAM: IPv4: {}",
            ipam.status(Family::V4).unwrap_or_default()
        );
        for (ip, owner) in ipam.list() {
            println!("    {ip:<15} {owner}");
        }
    }
    let (used, capacity) = pool.usage(Family::V4).unwrap_or_default();
    println!("cluster pool: {used}/{capacity} node CIDRs allocated");
    Ok(())
}
