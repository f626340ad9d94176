package mailfleet.kstreams;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;

import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.state.KeyValueStore;
import org.apache.kafka.streams.state.StoreBuilder;
import org.apache.kafka.streams.state.Stores;
import org.apache.kafka.common.utils.Bytes;

/**
 * The Kafka Streams peer of {@code mailfleet run greylist}, for
 * {@code mailfleet bench kstreams}: reads the attempts topic, decides each
 * {@code DeliveryAttempted} with the Rust consumer's rules against a
 * persistent RocksDB {@code KeyValueStore} (changelogged), and writes one
 * {@code GreylistDecided} per attempt. Runs until SIGTERM.
 *
 * <pre>
 * java -jar greylist-kstreams.jar --bootstrap 127.0.0.1:9092 --application-id ID \
 *     --input TOPIC --output TOPIC --state-dir DIR [--threads 2] \
 *     [--guarantee exactly_once_v2|at_least_once] [--cache-mb 64] \
 *     [--whitelist-clients FILE]... [--whitelist-recipients FILE]... [--version V]
 * </pre>
 */
public final class GreylistApp {
    private GreylistApp() {}

    private static final List<String> KEYS = List.of("--bootstrap", "--application-id", "--input",
            "--output", "--state-dir", "--threads", "--guarantee", "--cache-mb",
            "--whitelist-clients", "--whitelist-recipients", "--version");

    static Map<String, List<String>> parse(String[] args) {
        Map<String, List<String>> out = new HashMap<>();
        for (int i = 0; i < args.length; i += 2) {
            if (!KEYS.contains(args[i]) || i + 1 >= args.length) {
                throw new IllegalArgumentException("bad argument " + args[i] + " (known: " + KEYS + ", each with a value)");
            }
            out.computeIfAbsent(args[i], k -> new ArrayList<>()).add(args[i + 1]);
        }
        for (String need : List.of("--bootstrap", "--application-id", "--input", "--output", "--state-dir")) {
            if (!out.containsKey(need)) {
                throw new IllegalArgumentException("missing " + need);
            }
        }
        return out;
    }

    static String one(Map<String, List<String>> a, String key, String dflt) {
        List<String> v = a.get(key);
        return v == null ? dflt : v.get(v.size() - 1);
    }

    public static void main(String[] argv) throws Exception {
        Map<String, List<String>> a;
        try {
            a = parse(argv);
        } catch (IllegalArgumentException e) {
            System.err.println("greylist-kstreams: " + e.getMessage());
            System.exit(2);
            return;
        }
        Whitelists lists = new Whitelists();
        for (String f : a.getOrDefault("--whitelist-clients", List.of())) {
            lists.addClients(f, Files.readString(Path.of(f)));
        }
        for (String f : a.getOrDefault("--whitelist-recipients", List.of())) {
            lists.addRecipients(f, Files.readString(Path.of(f)));
        }
        Rules rules = new Rules(); // postgrey's defaults until a ConfigChanged
        String version = one(a, "--version", "0.1.0");

        StoreBuilder<KeyValueStore<Bytes, byte[]>> store = Stores.keyValueStoreBuilder(
                Stores.persistentKeyValueStore(GreylistProcessor.STORE), Serdes.Bytes(), Serdes.ByteArray())
                .withCachingEnabled();
        Topology topology = new Topology();
        topology.addSource("attempts", Serdes.ByteArray().deserializer(), Serdes.ByteArray().deserializer(),
                one(a, "--input", null));
        topology.addProcessor("greylist", () -> new GreylistProcessor(rules, lists, version), "attempts");
        topology.addStateStore(store, "greylist");
        topology.addSink("decisions", one(a, "--output", null), Serdes.ByteArray().serializer(),
                Serdes.ByteArray().serializer(), "greylist");

        Properties p = new Properties();
        p.put(StreamsConfig.APPLICATION_ID_CONFIG, one(a, "--application-id", null));
        p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, one(a, "--bootstrap", null));
        p.put(StreamsConfig.STATE_DIR_CONFIG, one(a, "--state-dir", null));
        p.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, one(a, "--threads", "2"));
        p.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, one(a, "--guarantee", StreamsConfig.EXACTLY_ONCE_V2));
        long cacheMb = Long.parseLong(one(a, "--cache-mb", "64"));
        if (cacheMb > 0) {
            p.put(StreamsConfig.ROCKSDB_CONFIG_SETTER_CLASS_CONFIG, BoundedMemory.class);
            p.put(BoundedMemory.CACHE_BYTES, Long.toString(cacheMb << 20));
        }
        p.put(StreamsConfig.consumerPrefix("auto.offset.reset"), "earliest");

        KafkaStreams streams = new KafkaStreams(topology, p);
        CountDownLatch done = new CountDownLatch(1);
        streams.setStateListener((now, before) -> {
            System.out.println("state " + before + " -> " + now);
            if (now == KafkaStreams.State.ERROR || now == KafkaStreams.State.NOT_RUNNING) {
                done.countDown();
            }
        });
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            streams.close(Duration.ofSeconds(30));
            done.countDown();
        }));
        streams.start();
        done.await();
        System.out.println("skipped " + GreylistProcessor.SKIPPED.get());
        if (streams.state() == KafkaStreams.State.ERROR) {
            System.exit(1);
        }
    }
}
