# The two commands of the README. Everything they need is installed by the scripts they call.
.PHONY: demo test services-up services-down

## Run the embedded stack demo (gateway + edge + center on loopback, the shipped model).
demo:
	scripts/demo.sh

## Run the whole test suite: CI gate + real Redis and Apache Kafka started and stopped around it.
test:
	scripts/test.sh

services-up:
	scripts/services.sh up

services-down:
	scripts/services.sh down
