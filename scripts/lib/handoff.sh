# Shared by the benchmark scripts that run the Kafka hand-off on loopback (source it after
# `eval "$(scripts/services.sh env)"`): configs for r1-center nodes and gateways whose topics and
# consumer group all start with one prefix, so runs never see each other's tasks.
#
#   center_config ID METRICS BACKEND MODEL PREFIX   an r1-center config on stdout: node ID, metrics on
#                                                   METRICS, backend http://BACKEND/v1 serving MODEL
#   gateway_kafka PREFIX                            a gateway's [center.kafka] table (results partition 0)

center_config() {
  local id="$1" metrics="$2" backend="$3" model="$4" prefix="$5"
  cat <<EOF_CENTER
[node]
id = "$id"
max_in_flight = 512
metrics = "$metrics"
[backend]
kind = "openai"
base_url = "http://$backend/v1"
model = "$model"
[kafka]
brokers = "$R1_TEST_KAFKA_BROKERS"
group = "$prefix"
[topics]
interactive = "$prefix.interactive"
batch = "$prefix.batch"
results = "$prefix.results"
cancel = "$prefix.cancel"
dlq = "$prefix.dlq"
[redis]
url = "$R1_TEST_REDIS_URL"
EOF_CENTER
}

gateway_kafka() {
  local prefix="$1"
  printf '[center.kafka]\nbrokers = "%s"\nresults_partition = 0\nresult_partitions = 4\ncenter_group = "%s"\n' \
    "$R1_TEST_KAFKA_BROKERS" "$prefix"
  printf 'topics = { interactive = "%s.interactive", batch = "%s.batch", results = "%s.results", cancel = "%s.cancel", dlq = "%s.dlq" }\n' \
    "$prefix" "$prefix" "$prefix" "$prefix" "$prefix"
}
