# syntax=docker/dockerfile:1
# r1-center — Kafka-fed worker in front of the full model (the center tier of r1-hybrid)
# Built by scripts/images.sh, from the repository root as the context, one of two ways:
#   from source (Docker with access to an image registry):  the default target, `source`
#   from binaries already built on the host (no registry):   --target prebuilt, with a local
#     RUNTIME_IMAGE (scripts/images.sh makes one from Debian packages with mmdebstrap)
# The runtime is Debian slim, run as uid 10001, no shell needed by the process itself.
ARG RUST_IMAGE=rust:1.95-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${RUNTIME_IMAGE} AS runtime
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG SOURCE=https://example.invalid/r1-hybrid
LABEL org.opencontainers.image.title="r1-center" \
      org.opencontainers.image.description="Kafka-fed worker in front of the full model (the center tier of r1-hybrid)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="r1-hybrid"
# What ldd shows the binaries need (libc, libm, libgcc_s, and OpenSSL's libssl3/libcrypto for librdkafka's
# TLS and SASL — linked dynamically so Debian's security updates reach it; librdkafka and zlib are static)
# plus, for ONNX Runtime, libstdc++ — and CA certificates for HTTPS upstreams and TLS brokers whose CA is
# public (MSK, Confluent Cloud). A no-op on the mmdebstrap base.
RUN if [ ! -e /etc/ssl/certs/ca-certificates.crt ] || [ ! -e /usr/lib/x86_64-linux-gnu/libstdc++.so.6 ] \
      || [ ! -e /usr/lib/x86_64-linux-gnu/libssl.so.3 ]; then \
      apt-get update && apt-get install -y --no-install-recommends ca-certificates libstdc++6 zlib1g libssl3 \
      && rm -rf /var/lib/apt/lists/*; \
    fi
ENV RUST_LOG=info
EXPOSE 9091
USER 10001:10001
# bash's /dev/tcp: no curl in the image.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/9091 && printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' >&3 && grep -q '^HTTP/1.[01] 200' <&3"]
# The config is mounted, not baked in: deploy/k8s (a ConfigMap) and deploy/compose mount /etc/r1/center.toml.
ENTRYPOINT ["/usr/local/bin/r1-center"]
CMD ["--config", "/etc/r1/center.toml"]

# --- binaries built on the host (scripts/images.sh stages them under .r1/images/) ----------------
FROM runtime AS prebuilt
COPY .r1/images/bin/r1-center /usr/local/bin/r1-center
COPY .r1/images/onnxruntime/ /opt/onnxruntime/
COPY models/r1-edge-mini/ /models/r1-edge-mini/
ENV ORT_DYLIB_PATH=/opt/onnxruntime/libonnxruntime.so.1

# --- from source ---------------------------------------------------------------------------------
FROM ${RUST_IMAGE} AS build
RUN apt-get update && apt-get install -y --no-install-recommends cmake pkg-config zlib1g-dev libssl-dev python3-pip unzip \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p r1-center && mkdir -p /out && cp target/release/r1-center /out/
# ONNX Runtime from PyPI's wheel, the library only (no Python at run time).
ARG ORT_VERSION=1.32.0
RUN pip download --no-deps --only-binary=:all: --dest /tmp/ort "onnxruntime==${ORT_VERSION}" \
    && unzip -q -j /tmp/ort/onnxruntime-*.whl "onnxruntime/capi/libonnxruntime.so.${ORT_VERSION}" -d /out/onnxruntime \
    && mv "/out/onnxruntime/libonnxruntime.so.${ORT_VERSION}" /out/onnxruntime/libonnxruntime.so.1

FROM runtime AS source
COPY --from=build /out/r1-center /usr/local/bin/r1-center
COPY --from=build /out/onnxruntime/ /opt/onnxruntime/
COPY models/r1-edge-mini/ /models/r1-edge-mini/
ENV ORT_DYLIB_PATH=/opt/onnxruntime/libonnxruntime.so.1
