"""What the pipeline reads from outside: the source database (COPY into Arrow, the week's extract
and version, customers and products), the CRM, the events landing zone and the Kafka topic landed
into it, and the ECB rates."""
