# syntax=docker/dockerfile:1
# Multi-stage build: a static-enough release binary on rustls (no OpenSSL anywhere), run as a
# non-root user in a slim Debian image.

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# Dependencies first, so source edits do not rebuild them.
COPY Cargo.toml Cargo.lock ./
# Build settings (the allocator's arena commits on demand: lower idle RSS).
COPY .cargo ./.cargo
# Stub every target the manifest names (tests and benches are not part of the image).
RUN mkdir -p src benches tests/it \
    && echo 'fn main() {}' > src/main.rs \
    && echo '' > src/lib.rs \
    && echo 'fn main() {}' > benches/hot_path.rs \
    && echo 'fn main() {}' > benches/stream_capacity.rs \
    && echo 'fn main() {}' > tests/it/main.rs \
    && cargo build --release --locked --bin llmgate \
    && rm -rf src benches
COPY src ./src
COPY benches ./benches
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin llmgate

FROM debian:bookworm-slim
# ca-certificates: upstream TLS trust roots (the health check is the binary's own).
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin llmgate
COPY --from=build /src/target/release/llmgate /usr/local/bin/llmgate
COPY config/llmgate.example.toml /etc/llmgate/llmgate.example.toml
USER llmgate
ENV LLMGATE_LISTEN=0.0.0.0:8080 \
    LLMGATE_LOG_FORMAT=json
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["llmgate", "health"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["llmgate"]
CMD ["serve"]
