import { defineConfig } from "vite";

// RoomControl serves dist/ at /console/ on its main port, so every asset URL
// is relative. `npm run dev` serves the console on its own and forwards the
// grpc-web calls to a RoomControl (CONSOLE_API_URL, default
// http://127.0.0.1:50051), so the page and the API share an origin there too.
export default defineConfig({
  base: "./",
  build: {
    outDir: "dist",
    emptyOutDir: true,
    target: "es2022",
    // livekit-client is loaded only when the join page needs it.
    chunkSizeWarningLimit: 1024,
  },
  server: {
    proxy: {
      "/roomcontrol.v1.RoomControl": process.env.CONSOLE_API_URL ?? "http://127.0.0.1:50051",
    },
  },
});
