//! `boulder-componentize IN.wasm OUT.wasm`: wraps a core module into a component.
//!
//! The module carries its WIT world in a custom section (written by wit-bindgen's
//! `generate!`), so no WIT files or adapters are needed: guests target
//! `wasm32-unknown-unknown` and import nothing but what their world says.
use anyhow::{bail, Context, Result};
use wit_component::ComponentEncoder;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [input, output] = args.as_slice() else {
        bail!("usage: boulder-componentize IN.wasm OUT.wasm");
    };
    let module = std::fs::read(input).with_context(|| format!("reading {input}"))?;
    let component = ComponentEncoder::default()
        .validate(true)
        .module(&module)
        .with_context(|| format!("{input}: reading its component-type section"))?
        .encode()
        .with_context(|| format!("{input}: encoding the component"))?;
    std::fs::write(output, component).with_context(|| format!("writing {output}"))?;
    Ok(())
}
