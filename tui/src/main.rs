//! `hush-tui`: the terminal chat client. Not built yet: until it is, people chat
//! with the `hush` CLI (see the README).

fn main() {
    eprintln!("hush-tui is not implemented yet; use the `hush` CLI (see the README)");
    std::process::exit(1);
}
