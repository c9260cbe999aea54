"""The built-in methods of ssl-bench, installed as `ssl_bench_plugins` and registered through the
`ssl_bench.methods` entry-point group exactly as a third-party plugin package would be."""
