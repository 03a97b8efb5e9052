//! Start a throwaway cluster, print how to reach it, and keep it until
//! stdin closes or Enter is pressed (Ctrl-C works too: the watchdog then
//! removes it).
//!
//! `cargo run -p tenantry-localpg --example throwaway`

fn main() {
    let cluster = match tenantry_localpg::Cluster::start_temp() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    println!("url:    {}", cluster.url("postgres"));
    println!("socket: {}", cluster.socket_dir().display());
    println!("data:   {}", cluster.data_dir().display());
    println!("press Enter to stop and remove it");
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
}
