package mailfleet.kstreams;

import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.util.Arrays;

import org.apache.avro.Schema;
import org.apache.avro.SchemaNormalization;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.message.BinaryMessageDecoder;
import org.apache.avro.message.BinaryMessageEncoder;

/**
 * The events this peer reads and writes, from the repository's own .avsc
 * files (bundled into the jar by the pom). Avro single-object encoding:
 * {@code C3 01}, the 8-byte little-endian CRC-64-AVRO fingerprint of the
 * writer schema, then the body; {@link BinaryMessageDecoder} speaks it.
 */
final class Events {
    static final Schema ATTEMPT = load("greylist/DeliveryAttempted.v2.avsc");
    static final Schema DECIDED = load("greylist/GreylistDecided.v2.avsc");
    static final Schema TICK = load("clock/ClockTicked.v1.avsc");
    static final Schema CONFIG = load("config/ConfigChanged.v1.avsc");

    /** What kind of input a record is, from its fingerprint. */
    enum Kind { ATTEMPT, TICK, CONFIG, UNKNOWN }

    private static final byte[] FP_ATTEMPT = fingerprint(ATTEMPT);
    private static final byte[] FP_TICK = fingerprint(TICK);
    private static final byte[] FP_CONFIG = fingerprint(CONFIG);

    private final BinaryMessageDecoder<GenericRecord> attempts =
            new BinaryMessageDecoder<>(GenericData.get(), ATTEMPT);
    private final BinaryMessageDecoder<GenericRecord> ticks =
            new BinaryMessageDecoder<>(GenericData.get(), TICK);
    private final BinaryMessageDecoder<GenericRecord> configs =
            new BinaryMessageDecoder<>(GenericData.get(), CONFIG);
    private final BinaryMessageEncoder<GenericRecord> decided =
            new BinaryMessageEncoder<>(GenericData.get(), DECIDED);

    private static Schema load(String path) {
        try (InputStream in = Events.class.getResourceAsStream("/schemas/" + path)) {
            if (in == null) {
                throw new IllegalStateException("schema " + path + " is not in the jar");
            }
            // One parser per file: each file defines mailfleet.Envelope inline.
            return new Schema.Parser().parse(in);
        } catch (IOException e) {
            throw new UncheckedIOException("reading schema " + path, e);
        }
    }

    private static byte[] fingerprint(Schema s) {
        long fp = SchemaNormalization.parsingFingerprint64(s);
        return ByteBuffer.allocate(8).order(java.nio.ByteOrder.LITTLE_ENDIAN).putLong(fp).array();
    }

    /** The kind of a framed record, by its marker and fingerprint. */
    static Kind kind(byte[] bytes) {
        if (bytes == null || bytes.length < 10 || bytes[0] != (byte) 0xC3 || bytes[1] != 0x01) {
            return Kind.UNKNOWN;
        }
        if (Arrays.equals(bytes, 2, 10, FP_ATTEMPT, 0, 8)) {
            return Kind.ATTEMPT;
        }
        if (Arrays.equals(bytes, 2, 10, FP_TICK, 0, 8)) {
            return Kind.TICK;
        }
        if (Arrays.equals(bytes, 2, 10, FP_CONFIG, 0, 8)) {
            return Kind.CONFIG;
        }
        return Kind.UNKNOWN;
    }

    GenericRecord decode(Kind kind, byte[] bytes) throws IOException {
        return switch (kind) {
            case ATTEMPT -> attempts.decode(bytes);
            case TICK -> ticks.decode(bytes);
            case CONFIG -> configs.decode(bytes);
            case UNKNOWN -> throw new IOException("not a greylist input");
        };
    }

    byte[] encode(GenericRecord record) throws IOException {
        ByteBuffer buf = decided.encode(record);
        byte[] out = new byte[buf.remaining()];
        buf.get(out);
        return out;
    }

    /** A nullable string field. */
    static String str(GenericRecord r, String field) {
        Object v = r.get(field);
        return v == null ? null : v.toString();
    }

    static GenericData.EnumSymbol symbol(String enumField, String symbol) {
        return new GenericData.EnumSymbol(DECIDED.getField(enumField).schema(), symbol);
    }
}
