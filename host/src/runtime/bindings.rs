//! Host-side bindings of the `boulder:transform@0.1.0` world, generated from `wit/`.
wasmtime::component::bindgen!({
    path: "../wit",
    world: "transform",
});
