//! What `/proc/net` says of loopback sockets, for tests of the library
//! and of the apps built on it (included with `#[path]`).

/// The inode of the socket listening on 127.0.0.1:`port` (from
/// `/proc/net/tcp`), if there is one.
pub fn listening_inode(port: u16) -> Option<u64> {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let local = format!("0100007F:{port:04X}");
    table.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        // local_address, state (0A: listen), inode.
        (f.get(1) == Some(&local.as_str()) && f.get(3) == Some(&"0A"))
            .then(|| f.get(9).and_then(|i| i.parse().ok()))
            .flatten()
    })
}
