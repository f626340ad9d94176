package mailfleet.kstreams;

import java.util.Map;

import org.apache.kafka.streams.state.RocksDBConfigSetter;
import org.rocksdb.BlockBasedTableConfig;
import org.rocksdb.Cache;
import org.rocksdb.CompressionType;
import org.rocksdb.LRUCache;
import org.rocksdb.Options;
import org.rocksdb.WriteBufferManager;

/**
 * One block cache for every store of the process, with the memtables
 * counted against it: the Kafka Streams documentation's recipe for bounded
 * RocksDB memory. Without it each task's store has its own 50 MB cache and
 * three 16 MB memtables (12 partitions: up to ~1.2 GB). Sized by
 * {@code mailfleet.rocksdb.cache.bytes} (memtables: a quarter of it).
 */
public final class BoundedMemory implements RocksDBConfigSetter {
    static final String CACHE_BYTES = "mailfleet.rocksdb.cache.bytes";
    private static Cache cache;
    private static WriteBufferManager writeBuffers;

    private static synchronized void init(long bytes) {
        if (cache == null) {
            cache = new LRUCache(bytes, -1, false, 0.1);
            writeBuffers = new WriteBufferManager(bytes / 4, cache);
        }
    }

    @Override
    public void setConfig(String storeName, Options options, Map<String, Object> configs) {
        init(Long.parseLong(String.valueOf(configs.get(CACHE_BYTES))));
        BlockBasedTableConfig table = (BlockBasedTableConfig) options.tableFormatConfig();
        table.setBlockCache(cache);
        table.setCacheIndexAndFilterBlocks(true);
        table.setCacheIndexAndFilterBlocksWithHighPriority(true);
        table.setPinTopLevelIndexAndFilter(true);
        options.setWriteBufferManager(writeBuffers);
        // The Rust store's state column family compresses with LZ4 too.
        options.setCompressionType(CompressionType.LZ4_COMPRESSION);
        options.setTableFormatConfig(table);
    }

    @Override
    public void close(String storeName, Options options) {
        // The cache and the write buffer manager are shared: never closed here.
    }
}
