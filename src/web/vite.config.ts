import { fileURLToPath } from 'node:url';
import react from '@vitejs/plugin-react';
import { defineConfig } from 'vite';

const here = fileURLToPath(new URL('.', import.meta.url));
/** Where `npm run dev:web` sends API calls: a mailtrail started with `npm start`. */
const api = process.env.MAILTRAIL_API ?? `http://127.0.0.1:${process.env.PORT ?? 3000}`;

export default defineConfig({
  root: here,
  base: '/',
  plugins: [react()],
  // Nothing from the server's environment reaches the bundle.
  envPrefix: 'MAILTRAIL_WEB_',
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    assetsDir: 'assets',
    sourcemap: false,
    target: 'es2022',
    // The polyfill would be an inline script, which the CSP forbids; every target browser has modulepreload.
    modulePreload: { polyfill: false },
    chunkSizeWarningLimit: 1000,
  },
  server: {
    proxy: {
      '/trpc': { target: api, changeOrigin: false },
      '/attachments': { target: api, changeOrigin: false },
    },
  },
});
