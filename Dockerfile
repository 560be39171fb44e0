# syntax=docker/dockerfile:1
# The poynt-proxy image: built in the official Rust image, run on Debian slim as a non-root
# user, with a read-only root filesystem in mind: /data (the embedded token store) is the
# only path it writes. See README.md ("Deploy") for the build and run commands.
#
# The Rust version is at least every locked crate's rust-version (tests/deploy.rs checks).
FROM rust:1.95.0-bookworm AS build
WORKDIR /src
COPY . .
# The release build CI runs too (.ci/run; tests/deploy.rs keeps the two identical): cargo's
# locked release build, optimised with the execution profile recorded in benches/pgo.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    scripts/release.sh \
    && install -D -m 0755 target/release/poynt-proxy /out/poynt-proxy

FROM debian:12-slim
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/poynt-proxy /usr/local/bin/poynt-proxy
COPY deploy/image/config.yaml /etc/poynt-proxy/config.yaml
RUN install -d -m 0755 /etc/poynt-proxy/secrets \
    && install -d -m 0700 -o 65532 -g 65532 /data
# Numeric, so no account needs to exist in the image and Kubernetes' runAsNonRoot can
# check it.
USER 65532:65532
VOLUME ["/data"]
# Callers, the admin listener (health, metrics, admin API).
EXPOSE 8080 9090
ENTRYPOINT ["poynt-proxy"]
CMD ["run", "--config", "/etc/poynt-proxy/config.yaml"]
