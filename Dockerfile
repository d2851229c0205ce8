# A conventional multi-stage build of the sundial binary, for machines that
# can pull base images. (Where no registry is reachable, scripts/build-image.sh
# builds the same runtime image FROM scratch out of a local build.)
#
#   docker build -t sundial:local .
#   docker run -p 7070:7070 sundial:local          # a one-node dev cluster

FROM rust:1.95-bookworm AS build
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libclang-dev g++ make >/dev/null \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p sundial --bin sundial \
 && cp target/release/sundial /usr/local/bin/sundial

FROM debian:bookworm-slim
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ca-certificates >/dev/null \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /data
COPY --from=build /usr/local/bin/sundial /usr/local/bin/sundial
ENV SUNDIAL_DATA_DIR=/data
VOLUME /data
EXPOSE 7070 7170 7270
ENTRYPOINT ["/usr/local/bin/sundial"]
CMD ["dev", "--listen", "0.0.0.0:7070", "--data-dir", "/data"]
