//! Pick a free TCP port on the loopback interface.
//!
//! The port is found by binding port 0 and releasing it, so another process may grab it
//! before the server binds it; [`super::PgCluster::start_on_free_port`] retries once on
//! "address in use".

use std::net::{Ipv4Addr, TcpListener};

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> std::io::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_port_can_be_bound() {
        let port = free_port().expect("bind port 0");
        assert_ne!(port, 0);
        TcpListener::bind((Ipv4Addr::LOCALHOST, port)).expect("port is free again");
    }
}
