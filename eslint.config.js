// Lint: typescript-eslint's recommended rules plus the layer boundaries of SPEC.md
// (node/ assembles sip-gateway/ and dht/; sip-gateway/ never imports dht/ or libp2p; dht/ knows no SIP).
import js from '@eslint/js'
import tseslint from 'typescript-eslint'

const libp2pModules = ['libp2p', 'libp2p/*', '@libp2p/*', '@chainsafe/*', 'datastore-*', 'interface-datastore']

export default tseslint.config(
  { ignores: ['node_modules/**', '.sipmesh/**', 'coverage/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: { globals: { process: 'readonly', console: 'readonly', setTimeout: 'readonly', clearTimeout: 'readonly', setInterval: 'readonly', clearInterval: 'readonly', Buffer: 'readonly', AbortController: 'readonly', AbortSignal: 'readonly', URL: 'readonly', TextEncoder: 'readonly', TextDecoder: 'readonly', performance: 'readonly', queueMicrotask: 'readonly', setImmediate: 'readonly' } },
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none' }],
      '@typescript-eslint/no-explicit-any': 'warn',
      'no-constant-condition': ['error', { checkLoops: false }]
    }
  },
  {
    // the dashboard and the browser phone: plain scripts the admin API serves to a browser
    files: ['node/admin/dashboard/**/*.js'],
    languageOptions: { globals: { document: 'readonly', window: 'readonly', fetch: 'readonly', Node: 'readonly', URLSearchParams: 'readonly', localStorage: 'readonly', uPlot: 'readonly', DOMParser: 'readonly' } }
  },
  {
    files: ['sip-gateway/**/*.ts'],
    rules: {
      'no-restricted-imports': ['error', { patterns: [
        { group: ['**/dht/**', '**/node/**'], message: 'sip-gateway/ reaches the mesh only through sip-gateway/ports.ts' },
        { group: libp2pModules, message: 'sip-gateway/ knows SIP, not libp2p' }
      ] }]
    }
  },
  {
    files: ['dht/**/*.ts'],
    rules: {
      'no-restricted-imports': ['error', { patterns: [
        { group: ['**/node/**'], message: 'dht/ does not import node/ (node/ is the composition root)' },
        { group: ['sip.js', 'sip.js/*'], message: 'dht/ knows nothing of SIP messages' }
      ] }]
    }
  },
  {
    files: ['dht/**/*.ts', 'sip-gateway/**/*.ts'],
    rules: {
      'no-restricted-properties': ['error', { object: 'process', property: 'env', message: 'only node/ reads process.env' }]
    }
  }
)
