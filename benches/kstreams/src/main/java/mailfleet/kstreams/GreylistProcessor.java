package mailfleet.kstreams;

import java.nio.charset.StandardCharsets;
import java.util.HashMap;
import java.util.Map;
import java.util.concurrent.atomic.AtomicLong;
import java.util.function.BiConsumer;

import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericRecord;
import org.apache.kafka.common.serialization.BytesSerializer;
import org.apache.kafka.common.utils.Bytes;
import org.apache.kafka.streams.processor.api.Processor;
import org.apache.kafka.streams.processor.api.ProcessorContext;
import org.apache.kafka.streams.processor.api.Record;
import org.apache.kafka.streams.processor.api.RecordMetadata;
import org.apache.kafka.streams.state.KeyValueIterator;
import org.apache.kafka.streams.state.KeyValueStore;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * One partition's greylist: decodes each record of the attempts topic
 * and, like the Rust consumer, decides a {@code DeliveryAttempted} into a
 * {@code GreylistDecided} (same event id, causation and correlation),
 * sweeps on a {@code ClockTicked}, and takes a {@code ConfigChanged} for
 * "greylist" into force for this partition (key {@code @}).
 */
final class GreylistProcessor implements Processor<byte[], byte[], byte[], byte[]> {
    static final String STORE = "greylist";
    /** Inputs that were not greylist events, or whose settings were refused. */
    static final AtomicLong SKIPPED = new AtomicLong();
    private static final Logger LOG = LoggerFactory.getLogger(GreylistProcessor.class);
    private static final byte[] IN_FORCE = {'@'};

    private final Rules fileRules;
    private final Decider decider;
    private final Events events = new Events();
    private final Map<String, Rules> byHash = new HashMap<>();
    /** The last settings JSON read and what it gave: one SHA-256 per change, not per attempt. */
    private byte[] lastJson;
    private Map.Entry<Rules, String> lastInForce;
    private ProcessorContext<byte[], byte[]> context;
    private KeyValueStore<Bytes, byte[]> store;
    private final Decider.State state = new Decider.State() {
        public byte[] get(byte[] key) {
            return store.get(Bytes.wrap(key));
        }
        public void put(byte[] key, byte[] value) {
            store.put(Bytes.wrap(key), value);
        }
        public void delete(byte[] key) {
            store.delete(Bytes.wrap(key));
        }
        public void scan(byte prefix, BiConsumer<byte[], byte[]> f) {
            try (KeyValueIterator<Bytes, byte[]> it =
                         store.prefixScan(Bytes.wrap(new byte[] {prefix}), new BytesSerializer())) {
                it.forEachRemaining(kv -> f.accept(kv.key.get(), kv.value));
            }
        }
    };

    GreylistProcessor(Rules fileRules, Whitelists fileLists, String version) {
        this.fileRules = fileRules;
        this.decider = new Decider(fileLists, version);
    }

    @Override
    public void init(ProcessorContext<byte[], byte[]> context) {
        this.context = context;
        this.store = context.getStateStore(STORE);
    }

    /** The rules in force in this partition and their hash (null: the file's). */
    private Map.Entry<Rules, String> inForce() {
        byte[] json = store.get(Bytes.wrap(IN_FORCE));
        if (json == null) {
            return Map.entry(fileRules, "");
        }
        if (java.util.Arrays.equals(json, lastJson)) {
            return lastInForce;
        }
        String text = new String(json, StandardCharsets.UTF_8);
        String hash = Rules.hash(text);
        Rules r = byHash.computeIfAbsent(hash, h -> {
            try {
                return Rules.fromJson(text);
            } catch (Exception e) {
                throw new IllegalStateException("greylist settings in force are corrupt: " + e.getMessage(), e);
            }
        });
        lastJson = json;
        lastInForce = Map.entry(r, hash);
        return lastInForce;
    }

    @Override
    public void process(Record<byte[], byte[]> record) {
        Events.Kind kind = Events.kind(record.value());
        GenericRecord event;
        try {
            event = events.decode(kind, record.value());
        } catch (Exception e) {
            // The Rust consumer dead-letters these; none are in the bench's input.
            SKIPPED.incrementAndGet();
            LOG.warn("skipping an undecodable record: {}", e.toString());
            return;
        }
        GenericRecord envelope = (GenericRecord) event.get("envelope");
        long nowS = Math.floorDiv((Long) envelope.get("event_time"), 1000L);
        switch (kind) {
            case ATTEMPT -> decide(record, event, envelope, nowS);
            case TICK -> decider.sweep(inForce().getKey(), state, nowS);
            case CONFIG -> take(event);
            default -> SKIPPED.incrementAndGet();
        }
    }

    private void decide(Record<byte[], byte[]> record, GenericRecord a, GenericRecord cause, long now) {
        Map.Entry<Rules, String> rules = inForce();
        Decider.Answer answer = decider.judge(rules.getKey(), state, new Decider.Attempt(
                Events.str(a, "client_address"), Events.str(a, "client_name"),
                Events.str(a, "sender"), Events.str(a, "recipient"), Events.str(a, "instance")), now);
        RecordMetadata meta = context.recordMetadata().orElseThrow();
        GenericRecord env = new GenericData.Record(Events.DECIDED.getField("envelope").schema());
        // The Rust runtime's output_id: consumer:topic:partition:offset:index.
        env.put("event_id", "greylist:" + meta.topic() + ":" + meta.partition() + ":" + meta.offset() + ":0");
        env.put("event_time", cause.get("event_time"));
        env.put("producer", "greylist");
        String causeId = Events.str(cause, "event_id");
        env.put("causation_id", causeId);
        String correlation = Events.str(cause, "correlation_id");
        env.put("correlation_id", correlation != null ? correlation : causeId);
        GenericRecord out = new GenericData.Record(Events.DECIDED);
        out.put("envelope", env);
        out.put("triplet", answer.triplet());
        out.put("verdict", Events.symbol("verdict", answer.verdict()));
        out.put("reason", Events.symbol("reason", answer.reason()));
        out.put("action", answer.action());
        out.put("delay_seconds", answer.delaySeconds());
        out.put("policy_host", Events.str(a, "policy_host"));
        out.put("settings_hash", rules.getValue().isEmpty() ? null : rules.getValue());
        byte[] key = record.key() == null ? new byte[0] : record.key();
        try {
            context.forward(record.withKey(key).withValue(events.encode(out)));
        } catch (java.io.IOException e) {
            throw new IllegalStateException("encoding GreylistDecided", e);
        }
    }

    /** A ConfigChanged for "greylist" whose hash is its settings' and that builds. */
    private void take(GenericRecord c) {
        if (!"greylist".equals(Events.str(c, "consumer"))) {
            return;
        }
        String json = Events.str(c, "settings");
        String hash = Rules.hash(json);
        if (!hash.equals(Events.str(c, "hash"))) {
            SKIPPED.incrementAndGet();
            LOG.warn("ConfigChanged: hash {} is not the SHA-256 of its settings ({})", Events.str(c, "hash"), hash);
            return;
        }
        try {
            byHash.putIfAbsent(hash, Rules.fromJson(json));
        } catch (Exception e) {
            SKIPPED.incrementAndGet();
            LOG.warn("ConfigChanged: settings {}: {}", json, e.getMessage());
            return;
        }
        byte[] current = store.get(Bytes.wrap(IN_FORCE));
        if (current == null || !Rules.hash(new String(current, StandardCharsets.UTF_8)).equals(hash)) {
            store.put(Bytes.wrap(IN_FORCE), json.getBytes(StandardCharsets.UTF_8));
        }
    }
}
