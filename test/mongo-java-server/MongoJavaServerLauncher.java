// Starts an in-memory mongo-java-server with the oplog enabled (needed for collection-level change streams).
// Usage: java -cp 'target/lib/*:target/classes' MongoJavaServerLauncher [host=127.0.0.1] [port=0 (free port)]
// Prints "READY <port>" on stdout once listening. Exits when stdin reaches EOF (parent gone) or on SIGTERM.
import de.bwaldvogel.mongo.MongoServer;
import de.bwaldvogel.mongo.backend.memory.MemoryBackend;
import java.io.IOException;
import java.io.InputStream;

public class MongoJavaServerLauncher {
    public static void main(String[] args) throws Exception {
        // slf4j-simple logs to stderr; keep it quiet unless the caller overrides it with -D.
        if (System.getProperty("org.slf4j.simpleLogger.defaultLogLevel") == null) {
            System.setProperty("org.slf4j.simpleLogger.defaultLogLevel", "warn");
        }
        String host = args.length > 0 ? args[0] : "127.0.0.1";
        int port = args.length > 1 ? Integer.parseInt(args[1]) : 0;

        MongoServer server = new MongoServer(new MemoryBackend());
        server.enableOplog();
        server.bind(host, port);
        // Runs on SIGTERM/SIGINT and on System.exit.
        Runtime.getRuntime().addShutdownHook(new Thread(server::shutdownNow, "mongo-shutdown"));

        System.out.println("READY " + server.getLocalAddress().getPort());
        System.out.flush();

        // Block until the parent closes our stdin (or dies), then exit.
        InputStream in = System.in;
        byte[] buf = new byte[256];
        try {
            while (in.read(buf) != -1) {
                // ignore input
            }
        } catch (IOException e) {
            // treat a broken stdin like EOF
        }
        System.exit(0);
    }
}
