{
  "targets": [
    {
      "target_name": "facade_tun",
      "sources": ["src/native/tun.cc", "src/native/steering.cc"],
      "include_dirs": ["<!@(node -p \"require('node-addon-api').include\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_DISABLE_CPP_EXCEPTIONS"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions"],
      "cflags": ["-O2", "-Wall", "-Wextra"],
      "cflags_cc": ["-O2", "-std=c++17", "-Wall", "-Wextra", "-fno-exceptions"]
    }
  ]
}
